//! The read-only root filesystem of a slot: a squashfs image written with
//! `backhand` (pure Rust, xz), reproducible byte for byte, and read back for
//! checks.

use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};

use backhand::{BackhandError, FilesystemReader, FilesystemWriter, InnerNode, NodeHeader};

use crate::fstree::{FsTree, Node, NodeKind};

/// Debian's arm64 and armhf kernels build in SQUASHFS_XZ; 128 KiB blocks
/// are mksquashfs' default and the kernel's best-tested size.
const BLOCK_SIZE: u32 = 128 * 1024;
const MAGIC: &[u8; 4] = b"hsqs";
/// Superblock offset of `bytes_used`, the image size without padding.
const BYTES_USED_AT: usize = 40;
const SUPERBLOCK_LEN: usize = 96;

#[derive(Debug, thiserror::Error)]
pub enum SquashfsError {
    #[error("writing the root filesystem failed: {0}")]
    Write(String),
    #[error("reading the root filesystem failed: {0}; the slot may be truncated or corrupt, rebuild or re-flash it")]
    Read(String),
    #[error("no squashfs here (the superblock magic `hsqs` is missing); the slot is empty or not a Keel root filesystem")]
    NotSquashfs,
    #[error("{path} in the root filesystem is a {kind}, which Keel's file tree cannot hold; remove it from the image")]
    Unsupported { path: String, kind: &'static str },
    #[error("a name in the root filesystem is not UTF-8: {0:?}; rename it")]
    NotUtf8(String),
    #[error("device {major}:{minor} at {path} does not fit squashfs' 12-bit major / 20-bit minor numbers")]
    DeviceNumber {
        path: String,
        major: u32,
        minor: u32,
    },
    #[error("root filesystem I/O failed: {0}")]
    Io(#[from] io::Error),
}

/// backhand is built without its `error-strings` feature, so its errors
/// print nothing; say what went wrong here instead.
fn describe(e: BackhandError) -> String {
    use BackhandError as B;
    match e {
        B::StdIo(e) => format!("I/O error: {e}"),
        B::Deku(e) => format!("malformed structure: {e}"),
        B::StringUtf8(_) | B::StrUtf8(_) => "a name is not UTF-8".into(),
        B::UnsupportedCompression(c) => format!("unsupported compression {c}"),
        B::MissingCompressor => "no compressor recorded".into(),
        B::FileNotFound => "file not found".into(),
        B::UnexpectedInode | B::UnsupportedInode => "unexpected or unsupported inode".into(),
        B::CorruptedOrInvalidSquashfs => "corrupted or invalid squashfs".into(),
        B::InvalidCompressionOption => "invalid compression options".into(),
        B::InvalidFilePath | B::UndefineFileName => "invalid file path".into(),
        B::DuplicatedFileName => "duplicated file name".into(),
        B::InvalidIdTable | B::IdNotFoundInTable => "invalid uid/gid table".into(),
        B::UnsupportedSquashfsVersion(a, b) => format!("unsupported squashfs version {a}.{b}"),
        B::NumericConversion(s) | B::InternalState(s) | B::CompressionInit(s) => s,
        B::TryReserveError(_) => "out of memory".into(),
        other => format!("internal error ({})", io::Error::from(other)),
    }
}

/// Linux `new_encode_dev`, the encoding squashfs stores (as mksquashfs does).
fn encode_dev(major: u32, minor: u32) -> Option<u32> {
    (major < 1 << 12 && minor < 1 << 20)
        .then_some((major << 8) | (minor & 0xff) | ((minor & !0xff) << 12))
}

fn decode_dev(dev: u32) -> (u32, u32) {
    ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xf_ff00))
}

/// Writes `tree` as a squashfs at the current position of `out`: xz,
/// 128 KiB blocks, owner root, every time (inodes and superblock) `mtime`.
/// Returns the bytes written, including the 4 KiB-alignment padding.
pub fn write<W: Write + Seek>(tree: &FsTree, mut out: W, mtime: u32) -> Result<u64, SquashfsError> {
    let root = root_template(mtime)?;
    let mut fs =
        FilesystemWriter::from_fs_reader(&root).map_err(|e| SquashfsError::Write(describe(e)))?;
    fs.set_block_size(BLOCK_SIZE);
    fs.set_time(mtime);
    fs.set_root_mode(0o755);
    fs.set_root_uid(0);
    fs.set_root_gid(0);
    // An empty path would be the root itself, whose header is set above.
    for (path, node) in tree.iter().filter(|(p, _)| !p.is_empty()) {
        let header = NodeHeader::new((node.mode & 0o7777) as u16, 0, 0, mtime);
        let pushed = match &node.kind {
            NodeKind::File(data) => fs.push_file(Cursor::new(data.as_slice()), path, header),
            NodeKind::Dir => fs.push_dir(path, header),
            NodeKind::Symlink(target) => fs.push_symlink(target.as_str(), path, header),
            NodeKind::CharDevice { major, minor } => {
                let dev =
                    encode_dev(*major, *minor).ok_or_else(|| SquashfsError::DeviceNumber {
                        path: path.to_string(),
                        major: *major,
                        minor: *minor,
                    })?;
                fs.push_char_device(dev, path, header)
            }
        };
        pushed.map_err(|e| SquashfsError::Write(format!("{path}: {}", describe(e))))?;
    }
    let start = out.stream_position()?;
    let (_, written) = fs
        .write_with_offset(&mut out, start)
        .map_err(|e| SquashfsError::Write(describe(e)))?;
    // The writer leaves the stream just after the superblock; callers expect
    // it after the image, like any other write.
    out.seek(SeekFrom::Start(start + written))?;
    Ok(written)
}

/// An empty image read back, as the writer's template. backhand's writer
/// offers no setter for the root directory's mtime (it stays 0); one built
/// from a reader inherits the reader's root header, which is public.
fn root_template(mtime: u32) -> Result<FilesystemReader<'static>, SquashfsError> {
    let mut empty = Cursor::new(Vec::new());
    FilesystemWriter::default()
        .write(&mut empty)
        .map_err(|e| SquashfsError::Write(describe(e)))?;
    empty.set_position(0);
    let mut reader =
        FilesystemReader::from_reader(empty).map_err(|e| SquashfsError::Write(describe(e)))?;
    let root = reader.root.root_mut();
    root.header = NodeHeader::new(0o755, 0, 0, mtime);
    Ok(reader)
}

/// Reads a squashfs (at the start of `r`) into a tree: files, directories,
/// symlinks and character devices with their permission bits.
pub fn read<R: Read + Seek + Send>(r: R) -> Result<FsTree, SquashfsError> {
    read_where(r, |_| true)
}

/// Like [`read`], keeping only the nodes whose path (without a leading
/// `/`) `keep` accepts; the data of other files is never decompressed.
pub fn read_where<R: Read + Seek + Send>(
    mut r: R,
    keep: impl Fn(&str) -> bool,
) -> Result<FsTree, SquashfsError> {
    r.seek(SeekFrom::Start(0))?;
    let mut sb = [0u8; SUPERBLOCK_LEN];
    r.read_exact(&mut sb).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => SquashfsError::NotSquashfs,
        _ => SquashfsError::Io(e),
    })?;
    if &sb[..4] != MAGIC {
        return Err(SquashfsError::NotSquashfs);
    }
    let mut used = [0u8; 8];
    used.copy_from_slice(&sb[BYTES_USED_AT..BYTES_USED_AT + 8]);
    let used = u64::from_le_bytes(used);
    let len = r.seek(SeekFrom::End(0))?;
    if used > len {
        return Err(SquashfsError::Read(format!(
            "the image claims {used} bytes but only {len} are there"
        )));
    }
    r.seek(SeekFrom::Start(0))?;
    // Read in place, not copied into memory first: a card's release file
    // is a few blocks of a root filesystem of tens of MiB.
    let fs = FilesystemReader::from_reader(io::BufReader::new(r))
        .map_err(|e| SquashfsError::Read(describe(e)))?;
    let mut tree = FsTree::new();
    for node in fs.files() {
        let full = node
            .fullpath
            .to_str()
            .ok_or_else(|| SquashfsError::NotUtf8(node.fullpath.display().to_string()))?;
        let path = full.trim_start_matches('/');
        if path.is_empty() || !keep(path) {
            continue;
        }
        let unsupported = |kind| SquashfsError::Unsupported {
            path: path.to_string(),
            kind,
        };
        let kind = match &node.inner {
            InnerNode::File(f) => {
                let mut data = Vec::new();
                let mut reader = fs
                    .file(f)
                    .reader_checked()
                    .map_err(|e| SquashfsError::Read(format!("{path}: {}", describe(e))))?;
                reader
                    .read_to_end(&mut data)
                    .map_err(|e| SquashfsError::Read(format!("{path}: {e}")))?;
                NodeKind::File(data)
            }
            InnerNode::Dir(_) => NodeKind::Dir,
            InnerNode::Symlink(s) => NodeKind::Symlink(
                s.link
                    .to_str()
                    .ok_or_else(|| SquashfsError::NotUtf8(s.link.display().to_string()))?
                    .to_string(),
            ),
            InnerNode::CharacterDevice(d) => {
                let (major, minor) = decode_dev(d.device_number);
                NodeKind::CharDevice { major, minor }
            }
            InnerNode::BlockDevice(_) => return Err(unsupported("block device")),
            InnerNode::NamedPipe => return Err(unsupported("named pipe")),
            InnerNode::Socket => return Err(unsupported("socket")),
        };
        tree.insert(
            path,
            Node {
                mode: u32::from(node.header.permissions),
                kind,
            },
        );
    }
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    const MTIME: u32 = 1_700_000_000; // 2023-11-14 22:13 UTC

    /// Host tools are cross-checks, not optional extras: a missing one fails.
    fn unsquashfs() -> Command {
        let path = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join("unsquashfs"))
            .find(|p| p.is_file());
        let mut cmd = Command::new(path.expect("unsquashfs is missing; install Debian package squashfs-tools (apt-get install squashfs-tools)"));
        cmd.env("TZ", "UTC");
        cmd
    }

    fn noise(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect()
    }

    fn sample(with_device: bool) -> FsTree {
        let mut t = FsTree::new();
        t.file("sbin/init", 0o755, noise(300_000, 1)); // several 128 KiB blocks
        t.file("etc/keel/release", 0o644, "version=1\n");
        t.file("etc/keel/copy-of-release", 0o644, "version=1\n"); // deduplicated
        t.file("etc/shadow", 0o600, "root:*:1::::::\n");
        t.file("empty", 0o644, Vec::new());
        t.symlink("bin", "usr/bin");
        t.symlink("usr/bin/sh", "/sbin/init");
        t.dir("data");
        if with_device {
            t.insert(
                "dev/console",
                Node {
                    mode: 0o600,
                    kind: NodeKind::CharDevice { major: 5, minor: 1 },
                },
            );
            t.insert(
                "dev/big",
                Node {
                    mode: 0o660,
                    kind: NodeKind::CharDevice {
                        major: 250,
                        minor: 300_000,
                    },
                },
            );
        }
        t
    }

    fn image(tree: &FsTree) -> (tempfile::NamedTempFile, u64) {
        let f = tempfile::NamedTempFile::new().unwrap();
        let n = write(tree, f.as_file(), MTIME).unwrap();
        (f, n)
    }

    #[test]
    fn round_trips_through_backhand() {
        let tree = sample(true);
        let mut out = Cursor::new(vec![0xEE; 7]);
        out.set_position(7);
        let n = write(&tree, &mut out, MTIME).unwrap();
        assert_eq!(out.position(), 7 + n);
        assert_eq!(n % 4096, 0, "padded to 4 KiB");
        let bytes = out.into_inner();
        assert_eq!(&bytes[..7], &[0xEE; 7]);
        assert_eq!(read(Cursor::new(&bytes[7..])).unwrap(), tree);
    }

    #[test]
    fn unsquashfs_lists_names_modes_targets_and_times() {
        let tree = sample(true);
        let (img, _) = image(&tree);
        let out = unsquashfs().arg("-lln").arg(img.path()).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut seen = 0;
        for line in text.lines().filter(|l| l.contains("squashfs-root")) {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(words[1], "0/0", "{line}");
            assert!(line.contains("2023-11-14 22:13"), "time not fixed: {line}");
            let name = line.split("squashfs-root").nth(1).unwrap();
            let (name, target) = match name.split_once(" -> ") {
                Some((n, t)) => (n, Some(t)),
                None => (name, None),
            };
            let path = name.trim_start_matches('/');
            if path.is_empty() {
                assert!(words[0].starts_with("drwxr-xr-x"), "root: {line}");
                continue;
            }
            let node = tree
                .get(path)
                .unwrap_or_else(|| panic!("unexpected {path}"));
            let (kind, perms) = words[0].split_at(1);
            let want_kind = match &node.kind {
                NodeKind::File(_) => "-",
                NodeKind::Dir => "d",
                NodeKind::Symlink(t) => {
                    assert_eq!(target, Some(t.as_str()), "{line}");
                    "l"
                }
                NodeKind::CharDevice { major, minor } => {
                    // unsquashfs prints the stored word as (dev >> 8, dev &
                    // 0xff), so an image mksquashfs made from a real device
                    // node lists the same only if the encodings agree.
                    let dev = encode_dev(*major, *minor).unwrap();
                    let field: String = line
                        .split("2023-11-14")
                        .next()
                        .unwrap()
                        .split_whitespace()
                        .skip(2)
                        .collect();
                    assert_eq!(field, format!("{},{}", dev >> 8, dev & 0xff), "{line}");
                    "c"
                }
            };
            assert_eq!(kind, want_kind, "{line}");
            let mode = perms.chars().fold(0, |m, c| m << 1 | u32::from(c != '-'));
            assert_eq!(mode, node.mode & 0o777, "{line}");
            seen += 1;
        }
        assert_eq!(seen, tree.len(), "{text}");
    }

    #[test]
    fn unsquashfs_extracts_the_same_bytes_and_reports_xz() {
        let tree = sample(false);
        let (img, _) = image(&tree);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let out = unsquashfs()
            .arg("-q")
            .arg("-d")
            .arg(&root)
            .arg(img.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (path, node) in tree.iter() {
            let p = root.join(path);
            match &node.kind {
                NodeKind::File(data) => assert_eq!(&std::fs::read(&p).unwrap(), data, "{path}"),
                NodeKind::Symlink(t) => assert_eq!(std::fs::read_link(&p).unwrap(), Path::new(t)),
                NodeKind::Dir => assert!(p.is_dir(), "{path}"),
                NodeKind::CharDevice { .. } => unreachable!(),
            }
        }
        let out = unsquashfs().arg("-s").arg(img.path()).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Compression xz") && text.contains("Block size 131072"),
            "{text}"
        );
        assert!(
            text.contains("Tue Nov 14 22:13:20 2023"),
            "superblock time: {text}"
        );
    }

    #[test]
    fn two_writes_are_byte_identical() {
        let a = image(&sample(true)).0;
        let b = image(&sample(true)).0;
        assert!(std::fs::read(a.path()).unwrap() == std::fs::read(b.path()).unwrap());
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(matches!(
            read(Cursor::new(vec![0u8; 4096])),
            Err(SquashfsError::NotSquashfs)
        ));
        assert!(matches!(
            read(Cursor::new(b"hsq".to_vec())),
            Err(SquashfsError::NotSquashfs)
        ));
        let mut bytes = Vec::new();
        write(&sample(false), Cursor::new(&mut bytes), MTIME).unwrap();
        let cut = bytes.len() / 2;
        assert!(matches!(
            read(Cursor::new(&bytes[..cut])),
            Err(SquashfsError::Read(_))
        ));
        let mut t = FsTree::new();
        t.insert(
            "dev/x",
            Node {
                mode: 0o600,
                kind: NodeKind::CharDevice {
                    major: 5000,
                    minor: 0,
                },
            },
        );
        assert!(matches!(
            write(&t, Cursor::new(Vec::new()), 0),
            Err(SquashfsError::DeviceNumber { .. })
        ));
        assert_eq!(
            decode_dev(encode_dev(259, 1_048_575).unwrap()),
            (259, 1_048_575)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn corrupt_images_are_errors_not_panics(at in 0usize..1 << 20, byte in proptest::num::u8::ANY, keep in 0.5f64..1.5) {
            let mut bytes = Vec::new();
            let mut t = FsTree::new();
            t.file("a/b", 0o644, noise(5000, 3));
            t.symlink("c", "a/b");
            write(&t, Cursor::new(&mut bytes), MTIME).unwrap();
            let at = at % bytes.len();
            bytes[at] ^= byte | 1;
            bytes.truncate((bytes.len() as f64 * keep) as usize);
            let _ = read(Cursor::new(bytes));
        }
    }
}
