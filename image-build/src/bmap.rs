//! Block maps for `bmaptool copy`: which blocks of the SD-card image hold
//! data and their checksums, so flashing skips the empty space and every
//! written range is verified.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

const VERSION: &str = "2.0";
/// Images are read in pieces of this size so a large image is never held
/// in memory at once.
const CHUNK: u64 = 1024 * 1024;
const SHA256_HEX_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    pub image_size: u64,
    pub block_size: u64,
    pub blocks_count: u64,
    pub mapped_blocks: u64,
    pub ranges: Vec<BmapRange>,
}

/// Blocks `first..=last`, with the SHA-256 (lowercase hex) of their bytes;
/// a range ending in a partial last block hashes only the bytes present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmapRange {
    pub first: u64,
    pub last: u64,
    pub sha256: String,
}

#[derive(Debug, Error)]
pub enum BmapError {
    #[error("cannot read image {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("image {0} is empty; a block map needs at least one byte of image")]
    EmptyImage(PathBuf),
    #[error(
        "block size {0} is not supported; use a size from 1 byte to 1 MiB (bmaptool uses 4096)"
    )]
    BadBlockSize(u64),
    #[error("image {0} changed size while it was being read; do not write the image while making its block map")]
    ImageChanged(PathBuf),
    #[error("malformed bmap file: {0}; regenerate it from the image")]
    Parse(String),
    #[error("bmap file version {0:?} is not supported; only format 2.x (bmaptool 3.x) is read")]
    UnsupportedVersion(String),
    #[error("bmap file checksum is {stored} but the file hashes to {computed}; the .bmap file was edited or corrupted, regenerate it")]
    FileChecksum { stored: String, computed: String },
    #[error("image {path} is {actual} bytes but the bmap describes {expected} bytes; this bmap belongs to a different image")]
    SizeMismatch {
        path: PathBuf,
        actual: u64,
        expected: u64,
    },
    #[error("blocks {first}-{last} of {path} hash to {actual}, not {expected} as the bmap says; the image is corrupt or does not match its bmap")]
    RangeChecksum {
        path: PathBuf,
        first: u64,
        last: u64,
        expected: String,
        actual: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BmapError + '_ {
    move |source| BmapError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Fills `buf` unless the file ends first; returns the bytes read.
fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The file's data extents as sorted (start, end) byte ranges, from
/// SEEK_DATA/SEEK_HOLE; a filesystem without them reports one extent.
fn data_extents(f: &File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    use std::os::unix::io::AsRawFd;
    let fd = f.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = 0i64;
    while (pos as u64) < size {
        let data = crate::sys::lseek(fd, pos, libc::SEEK_DATA);
        if data < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENXIO) => Ok(out),
                Some(libc::EINVAL) if out.is_empty() => Ok(vec![(0, size)]),
                _ => Err(e),
            };
        }
        let hole = crate::sys::lseek(fd, data, libc::SEEK_HOLE);
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        out.push((data as u64, hole as u64));
        pos = hole;
    }
    Ok(out)
}

/// Scans `image` and maps every block that holds written data (holes in
/// the sparse file are unmapped, written zeros are mapped, as with
/// `bmaptool create`); consecutive mapped blocks form one range.
pub fn generate(image: &Path, block_size: u64) -> Result<Bmap, BmapError> {
    if block_size == 0 || block_size > CHUNK {
        return Err(BmapError::BadBlockSize(block_size));
    }
    let mut f = File::open(image).map_err(io_err(image))?;
    let image_size = f.metadata().map_err(io_err(image))?.len();
    if image_size == 0 {
        return Err(BmapError::EmptyImage(image.to_path_buf()));
    }
    let blocks_count = image_size.div_ceil(block_size);
    let extents = data_extents(&f, image_size).map_err(io_err(image))?;
    f.seek(SeekFrom::Start(0)).map_err(io_err(image))?;
    let mut next_extent = 0;
    let mut buf = vec![0u8; (CHUNK / block_size * block_size) as usize];
    let mut ranges = Vec::new();
    let mut open: Option<(u64, Sha256)> = None;
    let mut block = 0u64;
    let mut total = 0u64;
    loop {
        let n = read_full(&mut f, &mut buf).map_err(io_err(image))?;
        total += n as u64;
        for chunk in buf[..n].chunks(block_size as usize) {
            // Mapped means "written", as bmaptool decides it: zeros the
            // image holds on purpose (FAT tables, ext4 metadata) must reach
            // the card, or a reused card keeps stale bytes there.
            let (start, end) = (block * block_size, block * block_size + chunk.len() as u64);
            while next_extent < extents.len() && extents[next_extent].1 <= start {
                next_extent += 1;
            }
            let mapped = extents.get(next_extent).is_some_and(|&(s, _)| s < end);
            match (&mut open, mapped) {
                (Some((_, hash)), true) => hash.update(chunk),
                (None, true) => {
                    let mut hash = Sha256::new();
                    hash.update(chunk);
                    open = Some((block, hash));
                }
                (Some(_), false) => {
                    if let Some((first, hash)) = open.take() {
                        ranges.push(BmapRange {
                            first,
                            last: block - 1,
                            sha256: hex::encode(hash.finalize()),
                        });
                    }
                }
                (None, false) => {}
            }
            block += 1;
        }
        if n < buf.len() {
            break;
        }
    }
    if let Some((first, hash)) = open {
        ranges.push(BmapRange {
            first,
            last: block - 1,
            sha256: hex::encode(hash.finalize()),
        });
    }
    if total != image_size {
        return Err(BmapError::ImageChanged(image.to_path_buf()));
    }
    let mapped_blocks = ranges.iter().map(|r| r.last - r.first + 1).sum();
    Ok(Bmap {
        image_size,
        block_size,
        blocks_count,
        mapped_blocks,
        ranges,
    })
}

/// bmaptool's `human_size`, so the comments match its output exactly
/// (including its "EiB" after "TiB").
fn human_size(size: u64) -> String {
    if size == 1 {
        return "1 byte".into();
    }
    if size < 512 {
        return format!("{size} bytes");
    }
    let mut s = size as f64;
    for unit in ["KiB", "MiB", "GiB", "TiB"] {
        s /= 1024.0;
        if s < 1024.0 {
            return format!("{s:.1} {unit}");
        }
    }
    format!("{s:.1} EiB")
}

const HEADER_COMMENT: &str = r#"<?xml version="1.0" ?>
<!-- This file contains the block map for an image file, which is basically
     a list of useful (mapped) block numbers in the image file. In other words,
     it lists only those blocks which contain data (boot sector, partition
     table, file-system metadata, files, directories, extents, etc). These
     blocks have to be copied to the target device. The other blocks do not
     contain any useful data and do not have to be copied to the target
     device.

     The block map an optimization which allows to copy or flash the image to
     the image quicker than copying of flashing the entire image. This is
     because with bmap less data is copied: <MappedBlocksCount> blocks instead
     of <BlocksCount> blocks.

     Besides the machine-readable data, this file contains useful commentaries
     which contain human-readable information like image size, percentage of
     mapped data, etc.

     The 'version' attribute is the block map file format version in the
     'major.minor' format. The version major number is increased whenever an
     incompatible block map format change is made. The minor number changes
     in case of minor backward-compatible changes. -->

"#;

/// Writes `text` over `buf` at `pos` as bmaptool's seek-and-write does,
/// overrunning the placeholder if the text is longer.
fn overwrite(buf: &mut String, pos: usize, text: &str) {
    let end = (pos + text.len()).min(buf.len());
    buf.replace_range(pos..end, text);
}

impl Bmap {
    /// The bmap file, byte-for-byte as `bmaptool create` (3.x) writes it
    /// for the same ranges.
    pub fn to_xml(&self) -> String {
        let image_human = human_size(self.image_size);
        let mut x = String::from(HEADER_COMMENT);
        x += &format!("<bmap version=\"{VERSION}\">\n");
        x += &format!("    <!-- Image size in bytes: {image_human} -->\n");
        x += &format!("    <ImageSize> {} </ImageSize>\n\n", self.image_size);
        x += "    <!-- Size of a block in bytes -->\n";
        x += &format!("    <BlockSize> {} </BlockSize>\n\n", self.block_size);
        x += "    <!-- Count of blocks in the image file -->\n";
        x += &format!("    <BlocksCount> {} </BlocksCount>\n\n", self.blocks_count);
        // bmaptool writes placeholders here and fills them in at the end;
        // their widths show in the spacing, so the same is done here.
        x += "    <!-- Count of mapped blocks: ";
        let mapped_comment_pos = x.len();
        x += &format!(
            "{} or {}   -->\n",
            " ".repeat(image_human.len()),
            " ".repeat("100.0%".len())
        );
        x += "    <MappedBlocksCount> ";
        let mapped_count_pos = x.len();
        x += &format!(
            "{} </MappedBlocksCount>\n\n",
            " ".repeat(self.blocks_count.to_string().len())
        );
        x += "    <!-- Type of checksum used in this file -->\n";
        x += "    <ChecksumType> sha256 </ChecksumType>\n\n";
        x += "    <!-- The checksum of this bmap file. When it is calculated, the value of\n";
        x += "         the checksum has be zero (all ASCII \"0\" symbols).  -->\n";
        x += "    <BmapFileChecksum> ";
        let checksum_pos = x.len();
        x += &"0".repeat(SHA256_HEX_LEN);
        x += " </BmapFileChecksum>\n\n";
        x += "    <!-- The block map which consists of elements which may either be a\n";
        x += "         range of blocks or a single block. The 'chksum' attribute\n";
        x += "         (if present) is the checksum of this blocks range. -->\n";
        x += "    <BlockMap>\n";
        for r in &self.ranges {
            if r.first == r.last {
                x += &format!(
                    "        <Range chksum=\"{}\"> {} </Range>\n",
                    r.sha256, r.first
                );
            } else {
                x += &format!(
                    "        <Range chksum=\"{}\"> {}-{} </Range>\n",
                    r.sha256, r.first, r.last
                );
            }
        }
        x += "    </BlockMap>\n</bmap>\n";

        let percent = (self.mapped_blocks as f64 * 100.0) / self.blocks_count.max(1) as f64;
        let mapped_human = human_size(self.mapped_blocks.saturating_mul(self.block_size));
        overwrite(
            &mut x,
            mapped_comment_pos,
            &format!("{mapped_human} or {percent:.1}%"),
        );
        overwrite(&mut x, mapped_count_pos, &self.mapped_blocks.to_string());
        // The file checksum is taken with its own field all zeros, which is
        // how bmaptool checks it (zeroing the first occurrence of the value).
        let checksum = hex::encode(Sha256::digest(x.as_bytes()));
        overwrite(&mut x, checksum_pos, &checksum);
        x
    }

    /// Reads a format 2.x bmap file (as `to_xml` or `bmaptool create`
    /// write it) and checks its file checksum and consistency.
    pub fn parse(xml: &str) -> Result<Bmap, BmapError> {
        let bad = |msg: String| BmapError::Parse(msg);
        let body = strip_comments(xml)?;
        let version = between(&body, "<bmap version=\"", "\"")
            .ok_or_else(|| bad("no <bmap version=…> element".into()))?;
        if !version.starts_with("2.") {
            return Err(BmapError::UnsupportedVersion(version.to_string()));
        }
        let number = |tag: &str| -> Result<u64, BmapError> {
            let text = element(&body, tag)?;
            text.parse()
                .map_err(|_| bad(format!("<{tag}> holds {text:?}, not a number")))
        };
        let image_size = number("ImageSize")?;
        let block_size = number("BlockSize")?;
        let blocks_count = number("BlocksCount")?;
        let mapped_blocks = number("MappedBlocksCount")?;
        let kind = element(&body, "ChecksumType")?;
        if kind != "sha256" {
            return Err(bad(format!(
                "checksum type {kind:?} is not supported, only sha256"
            )));
        }
        let stored = element(&body, "BmapFileChecksum")?;
        check_file_checksum(xml, stored)?;

        if block_size == 0 || image_size.div_ceil(block_size) != blocks_count {
            return Err(bad(format!(
                "{blocks_count} blocks of {block_size} bytes do not make an image of {image_size} bytes"
            )));
        }
        let map = element(&body, "BlockMap")?;
        let mut ranges = Vec::new();
        // Ranges must be sorted and disjoint; this is the first block the
        // next one may start at.
        let mut next_free = 0u64;
        let mut rest = map;
        while let Some(start) = rest.find("<Range") {
            let tag_end = rest[start..]
                .find('>')
                .ok_or_else(|| bad("unterminated <Range> tag".into()))?
                + start;
            let attrs = &rest[start + "<Range".len()..tag_end];
            let close = rest[tag_end..]
                .find("</Range>")
                .ok_or_else(|| bad("<Range> without </Range>".into()))?
                + tag_end;
            let text = rest[tag_end + 1..close].trim();
            rest = &rest[close + "</Range>".len()..];

            let sha256 = between(attrs, "chksum=\"", "\"").ok_or_else(|| {
                bad(format!(
                    "range {text:?} has no chksum attribute; Keel only flashes verified ranges"
                ))
            })?;
            if sha256.len() != SHA256_HEX_LEN || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!(
                    "range {text:?} has checksum {sha256:?}, not 64 hex digits"
                )));
            }
            let block = |s: &str| {
                s.trim()
                    .parse::<u64>()
                    .map_err(|_| bad(format!("range {text:?} is not \"a\" or \"a-b\"")))
            };
            let (first, last) = match text.split_once('-') {
                Some((a, b)) => (block(a)?, block(b)?),
                None => (block(text)?, block(text)?),
            };
            if first > last || last >= blocks_count || first < next_free {
                return Err(bad(format!(
                    "range {text:?} is out of order, reversed or beyond block {blocks_count}"
                )));
            }
            next_free = last + 1;
            ranges.push(BmapRange {
                first,
                last,
                sha256: sha256.to_ascii_lowercase(),
            });
        }
        let counted: u64 = ranges.iter().map(|r| r.last - r.first + 1).sum();
        if counted != mapped_blocks {
            return Err(bad(format!(
                "<MappedBlocksCount> says {mapped_blocks} but the ranges hold {counted} blocks"
            )));
        }
        Ok(Bmap {
            image_size,
            block_size,
            blocks_count,
            mapped_blocks,
            ranges,
        })
    }

    /// Checks that `image` has this map's size and that every mapped range
    /// has its recorded checksum.
    pub fn verify(&self, image: &Path) -> Result<(), BmapError> {
        let mut f = File::open(image).map_err(io_err(image))?;
        let actual = f.metadata().map_err(io_err(image))?.len();
        if actual != self.image_size {
            return Err(BmapError::SizeMismatch {
                path: image.to_path_buf(),
                actual,
                expected: self.image_size,
            });
        }
        let mut buf = vec![0u8; CHUNK as usize];
        for r in &self.ranges {
            let start = r.first.saturating_mul(self.block_size);
            let end = r
                .last
                .saturating_add(1)
                .saturating_mul(self.block_size)
                .min(self.image_size);
            f.seek(SeekFrom::Start(start)).map_err(io_err(image))?;
            let mut hash = Sha256::new();
            let mut left = end.saturating_sub(start);
            while left > 0 {
                let want = left.min(CHUNK) as usize;
                let n = read_full(&mut f, &mut buf[..want]).map_err(io_err(image))?;
                if n < want {
                    return Err(BmapError::ImageChanged(image.to_path_buf()));
                }
                hash.update(&buf[..n]);
                left -= n as u64;
            }
            let actual = hex::encode(hash.finalize());
            if actual != r.sha256 {
                return Err(BmapError::RangeChecksum {
                    path: image.to_path_buf(),
                    first: r.first,
                    last: r.last,
                    expected: r.sha256.clone(),
                    actual,
                });
            }
        }
        Ok(())
    }
}

/// The text between the first `open` and the next `close` after it.
fn between<'a>(s: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = s.find(open)? + open.len();
    let len = s[start..].find(close)?;
    Some(&s[start..start + len])
}

fn element<'a>(body: &'a str, tag: &str) -> Result<&'a str, BmapError> {
    between(body, &format!("<{tag}>"), &format!("</{tag}>"))
        .map(str::trim)
        .ok_or_else(|| BmapError::Parse(format!("no <{tag}> element")))
}

/// Comments must go first: the header comment mentions `<MappedBlocksCount>`.
fn strip_comments(xml: &str) -> Result<String, BmapError> {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(start) = rest.find("<!--") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("-->")
            .ok_or_else(|| BmapError::Parse("unterminated <!-- comment".into()))?;
        rest = &rest[start + end + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// bmaptool's rule: zero the first occurrence of the stored value in the
/// file, hash the whole file, compare.
fn check_file_checksum(xml: &str, stored: &str) -> Result<(), BmapError> {
    if stored.len() != SHA256_HEX_LEN {
        return Err(BmapError::Parse(format!(
            "<BmapFileChecksum> {stored:?} is not 64 hex digits"
        )));
    }
    let mut zeroed = xml.to_string();
    if let Some(pos) = xml.find(stored) {
        zeroed.replace_range(pos..pos + stored.len(), &"0".repeat(SHA256_HEX_LEN));
    }
    let computed = hex::encode(Sha256::digest(zeroed.as_bytes()));
    if computed != stored {
        return Err(BmapError::FileChecksum {
            stored: stored.to_string(),
            computed,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::Command;

    const MIB: u64 = 1024 * 1024;

    /// A sparse 8 MiB image with data islands: the MBR sector, a run that
    /// crosses a 1 MiB read boundary, a single block, and a partial last block.
    fn sparse_image(dir: &Path, size: u64) -> PathBuf {
        let path = dir.join("sdcard.img");
        let mut f = File::create(&path).unwrap();
        f.set_len(size).unwrap();
        let fill = |len: usize, seed: u8| {
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
                .collect::<Vec<u8>>()
        };
        for (offset, len, seed) in [
            (0, 4096, 1u8),
            (MIB - 8192, 5 * 4096, 2),
            (5 * MIB, 4096, 3),
        ] {
            f.seek(SeekFrom::Start(offset)).unwrap();
            f.write_all(&fill(len as usize, seed)).unwrap();
        }
        let tail = size % 4096;
        if tail > 0 {
            f.seek(SeekFrom::Start(size - tail)).unwrap();
            f.write_all(&fill(tail as usize, 4)).unwrap();
        }
        path
    }

    fn run(cmd: &mut Command, package: &str) -> std::process::Output {
        cmd.output()
            .unwrap_or_else(|e| panic!("{cmd:?}: {e}; install the Debian package {package}"))
    }

    fn bmaptool_copy(bmap: &Path, image: &Path, out: &Path) -> std::process::Output {
        run(
            Command::new("bmaptool")
                .arg("copy")
                .arg("--bmap")
                .arg(bmap)
                .arg(image)
                .arg(out),
            "bmap-tools",
        )
    }

    #[test]
    fn written_zeros_are_mapped_holes_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("z.img");
        let mut f = File::create(&img).unwrap();
        f.set_len(4 * MIB).unwrap();
        f.seek(SeekFrom::Start(MIB)).unwrap();
        std::io::Write::write_all(&mut f, &[0u8; 8192]).unwrap();
        f.sync_all().unwrap();
        let bmap = generate(&img, 4096).unwrap();
        let spans: Vec<(u64, u64)> = bmap.ranges.iter().map(|r| (r.first, r.last)).collect();
        assert_eq!(spans, [(256, 257)]);
    }

    #[test]
    fn generate_finds_the_islands() {
        let dir = tempfile::tempdir().unwrap();
        let img = sparse_image(dir.path(), 8 * MIB + 10);
        let bmap = generate(&img, 4096).unwrap();
        let spans: Vec<(u64, u64)> = bmap.ranges.iter().map(|r| (r.first, r.last)).collect();
        assert_eq!(spans, [(0, 0), (254, 258), (1280, 1280), (2048, 2048)]);
        assert_eq!(bmap.blocks_count, 2049);
        assert_eq!(bmap.mapped_blocks, 8);
        bmap.verify(&img).unwrap();
    }

    #[test]
    fn parse_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let bmap = generate(&sparse_image(dir.path(), 8 * MIB + 10), 4096).unwrap();
        let xml = bmap.to_xml();
        assert_eq!(Bmap::parse(&xml).unwrap(), bmap);
        assert!(
            xml.contains("> 1280 </Range>") && xml.contains("> 254-258 </Range>"),
            "{xml}"
        );
    }

    #[test]
    fn bmaptool_copy_accepts_our_bmap() {
        for size in [8 * MIB, 8 * MIB + 10] {
            let dir = tempfile::tempdir().unwrap();
            let img = sparse_image(dir.path(), size);
            let bmap_path = dir.path().join("sdcard.img.bmap");
            std::fs::write(&bmap_path, generate(&img, 4096).unwrap().to_xml()).unwrap();
            let out = dir.path().join("out.img");
            let res = bmaptool_copy(&bmap_path, &img, &out);
            assert!(
                res.status.success(),
                "bmaptool copy failed: {}",
                String::from_utf8_lossy(&res.stderr)
            );
            assert_eq!(
                std::fs::read(&out).unwrap(),
                std::fs::read(&img).unwrap(),
                "copy differs from image"
            );
            let cmp = run(Command::new("cmp").arg(&img).arg(&out), "diffutils");
            assert!(cmp.status.success());
        }
    }

    #[test]
    fn tampered_image_fails_bmaptool_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let img = sparse_image(dir.path(), 8 * MIB);
        let bmap = generate(&img, 4096).unwrap();
        let bmap_path = dir.path().join("sdcard.img.bmap");
        std::fs::write(&bmap_path, bmap.to_xml()).unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.seek(SeekFrom::Start(5 * MIB + 100)).unwrap();
        f.write_all(&[0x42]).unwrap();
        drop(f);

        let res = bmaptool_copy(&bmap_path, &img, &dir.path().join("out.img"));
        assert!(
            !res.status.success(),
            "bmaptool copy accepted a tampered image"
        );
        assert!(String::from_utf8_lossy(&res.stderr).contains("checksum mismatch"));
        let err = bmap.verify(&img).unwrap_err();
        assert!(
            matches!(
                err,
                BmapError::RangeChecksum {
                    first: 1280,
                    last: 1280,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn matches_bmaptool_create_byte_for_byte() {
        let dir = tempfile::tempdir().unwrap();
        let img = sparse_image(dir.path(), 8 * MIB);
        let theirs_path = dir.path().join("theirs.bmap");
        let res = run(
            Command::new("bmaptool")
                .arg("create")
                .arg("-o")
                .arg(&theirs_path)
                .arg(&img),
            "bmap-tools",
        );
        assert!(
            res.status.success(),
            "bmaptool create failed: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        let theirs = std::fs::read_to_string(&theirs_path).unwrap();
        // bmaptool maps filesystem extents, with the filesystem's block size.
        let parsed = Bmap::parse(&theirs).unwrap();
        let ours = generate(&img, parsed.block_size).unwrap();
        assert_eq!(ours, parsed);
        assert_eq!(ours.to_xml(), theirs);
    }

    #[test]
    fn parse_rejects_edited_files() {
        let dir = tempfile::tempdir().unwrap();
        let xml = generate(&sparse_image(dir.path(), 8 * MIB), 4096)
            .unwrap()
            .to_xml();
        let edited = xml.replace("> 1280 </Range>", "> 1281 </Range>");
        assert!(matches!(
            Bmap::parse(&edited),
            Err(BmapError::FileChecksum { .. })
        ));
        let version = xml.replace("version=\"2.0\"", "version=\"3.0\"");
        assert!(matches!(
            Bmap::parse(&version),
            Err(BmapError::UnsupportedVersion(_))
        ));
        assert!(matches!(Bmap::parse("<bmap"), Err(BmapError::Parse(_))));
        assert!(matches!(
            generate(dir.path(), 0),
            Err(BmapError::BadBlockSize(0))
        ));
        let wrong_size = dir.path().join("other.img");
        std::fs::write(&wrong_size, b"x").unwrap();
        let bmap = Bmap::parse(&xml).unwrap();
        assert!(matches!(
            bmap.verify(&wrong_size),
            Err(BmapError::SizeMismatch { actual: 1, .. })
        ));
        let empty = dir.path().join("empty.img");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(
            generate(&empty, 4096),
            Err(BmapError::EmptyImage(_))
        ));
    }

    #[test]
    fn human_size_matches_bmaptool() {
        assert_eq!(human_size(1), "1 byte");
        assert_eq!(human_size(511), "511 bytes");
        assert_eq!(human_size(512), "0.5 KiB");
        assert_eq!(human_size(600 * MIB), "600.0 MiB");
        assert_eq!(human_size(1 << 50), "1024.0 EiB");
        assert_eq!(human_size(1048575), "1024.0 KiB");
        assert_eq!(human_size(1 << 60), "1048576.0 EiB");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,400}") {
            let _ = Bmap::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_mangled_xml(cut in 0usize..4000, junk in "[<>\"0-9a-f -]{0,12}") {
            let bmap = Bmap { image_size: 8192, block_size: 4096, blocks_count: 2, mapped_blocks: 1,
                ranges: vec![BmapRange { first: 1, last: 1, sha256: "ab".repeat(32) }] };
            let xml = bmap.to_xml();
            let mut cut = cut.min(xml.len());
            while !xml.is_char_boundary(cut) { cut -= 1; }
            let _ = Bmap::parse(&format!("{}{}{}", &xml[..cut], junk, &xml[cut..]));
        }
    }
}
