//! The initramfs: an `FsTree` as a newc ("070701") cpio archive, the only
//! format the kernel unpacks, gzipped reproducibly.

use std::io::{self, Read, Write};

use flate2::read::GzDecoder;
use flate2::{Compression, GzBuilder};
use thiserror::Error;

use crate::fstree::{FsTree, Node, NodeKind};

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// Larger names than PATH_MAX are corrupt headers, not real paths.
const MAX_NAME: u32 = 4096;
/// An initramfs holds init and a few modules; a bigger entry means a
/// corrupt size field, and refusing it avoids allocating gigabytes.
const MAX_FILE: u32 = 1 << 30;

#[derive(Debug, Error)]
pub enum CpioError {
    #[error("entry {index} has magic {found:?}, not \"070701\"; this is not a newc cpio archive (or it is corrupt there)")]
    BadMagic { index: usize, found: String },
    #[error("archive ends inside entry {index} ({what}); the initramfs is truncated, rebuild it")]
    Truncated { index: usize, what: &'static str },
    #[error("entry {index}: header field {field} is not 8 hex digits; the archive is corrupt")]
    BadField { index: usize, field: &'static str },
    #[error("entry {index}: {field} is {value} bytes, more than the {limit} allowed; the archive is corrupt")]
    TooLarge {
        index: usize,
        field: &'static str,
        value: u32,
        limit: u32,
    },
    #[error("entry {index}: the name is not NUL-terminated UTF-8; the archive is corrupt")]
    BadName { index: usize },
    #[error("entry {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error("entry {path:?} has file type {mode:#o}; only files, directories, symlinks and character devices are supported")]
    UnsupportedType { path: String, mode: u32 },
    #[error(
        "entry {path:?} appears twice in the archive; an initramfs from Keel lists every path once"
    )]
    Duplicate { path: String },
    #[error("symlink {path:?} has a target that is not UTF-8")]
    BadSymlink { path: String },
    #[error("reading the initramfs failed (corrupt gzip data or I/O error): {0}")]
    Io(#[source] io::Error),
}

/// Writes `tree` as a newc archive: entries in the tree's sorted order,
/// inodes numbered from 1, root-owned, every mtime set to `mtime`.
pub fn write_newc<W: Write>(mut w: W, tree: &FsTree, mtime: u32) -> io::Result<()> {
    let mut written = 0u64;
    for (ino, (path, node)) in (1u32..).zip(tree.iter()) {
        // The root directory itself is "." in cpio archives made by find(1).
        let name = if path.is_empty() { "." } else { path };
        if name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?}: cpio names cannot contain NUL"),
            ));
        }
        let (kind_bits, nlink, data, rdev): (u32, u32, &[u8], (u32, u32)) = match &node.kind {
            NodeKind::File(d) => (S_IFREG, 1, d, (0, 0)),
            NodeKind::Dir => (S_IFDIR, 2, &[], (0, 0)),
            NodeKind::Symlink(t) => (S_IFLNK, 1, t.as_bytes(), (0, 0)),
            NodeKind::CharDevice { major, minor } => (S_IFCHR, 1, &[], (*major, *minor)),
        };
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{path}: newc cannot hold files of 4 GiB or more"),
            )
        })?;
        let entry = Entry {
            ino,
            mode: kind_bits | (node.mode & 0o7777),
            nlink,
            mtime,
            size,
            rdev,
            name,
        };
        written += entry.write(&mut w, data)?;
    }
    let trailer = Entry {
        ino: 0,
        mode: 0,
        nlink: 1,
        mtime: 0,
        size: 0,
        rdev: (0, 0),
        name: TRAILER,
    };
    written += trailer.write(&mut w, &[])?;
    // The kernel accepts any length, but 512-byte blocks match GNU cpio.
    let pad = (512 - written % 512) % 512;
    w.write_all(&vec![0u8; pad as usize])
}

/// `write_newc`, gzipped with a fixed header time and no file name so two
/// builds of the same tree give the same bytes.
pub fn write_initramfs_gz<W: Write>(w: W, tree: &FsTree, mtime: u32) -> io::Result<()> {
    let mut gz = GzBuilder::new().mtime(mtime).write(w, Compression::best());
    write_newc(&mut gz, tree, mtime)?;
    gz.finish()?.flush()
}

struct Entry<'a> {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev: (u32, u32),
    name: &'a str,
}

const ZEROS: [u8; 4] = [0; 4];

fn pad4(n: u64) -> usize {
    ((4 - n % 4) % 4) as usize
}

impl Entry<'_> {
    /// Returns the bytes written, for the final block padding.
    fn write<W: Write>(&self, w: &mut W, data: &[u8]) -> io::Result<u64> {
        let namesize = self.name.len() as u32 + 1;
        let fields = [
            self.ino,
            self.mode,
            0,
            0,
            self.nlink,
            self.mtime,
            self.size,
            0,
            0,
            self.rdev.0,
            self.rdev.1,
            namesize,
            0,
        ];
        let mut header = String::with_capacity(HEADER_LEN);
        header.push_str("070701");
        for f in fields {
            header.push_str(&format!("{f:08x}"));
        }
        w.write_all(header.as_bytes())?;
        w.write_all(self.name.as_bytes())?;
        // Header plus name (with its NUL) is padded to 4, and so is the data.
        let head = (HEADER_LEN + self.name.len() + 1) as u64;
        w.write_all(&ZEROS[..1 + pad4(head)])?;
        w.write_all(data)?;
        w.write_all(&ZEROS[..pad4(data.len() as u64)])?;
        Ok(head + pad4(head) as u64 + data.len() as u64 + pad4(data.len() as u64) as u64)
    }
}

/// Reads a newc archive up to its trailer into a tree. Owners, inode
/// numbers and times are dropped: Keel's trees do not carry them.
pub fn read_newc<R: Read>(r: R) -> Result<FsTree, CpioError> {
    read_entries(&mut Counting { inner: r, pos: 0 })
}

/// `read_newc` of a gzipped archive, as `write_initramfs_gz` makes.
pub fn read_initramfs_gz<R: Read>(r: R) -> Result<FsTree, CpioError> {
    let mut r = Counting {
        inner: GzDecoder::new(r),
        pos: 0,
    };
    let tree = read_entries(&mut r)?;
    // gzip's CRC is only checked at the end of the stream, after the
    // trailer's padding; read that far so corruption is not missed.
    io::copy(&mut r, &mut io::sink()).map_err(CpioError::Io)?;
    Ok(tree)
}

fn read_entries<R: Read>(r: &mut Counting<R>) -> Result<FsTree, CpioError> {
    let mut tree = FsTree::new();
    let mut index = 0usize;
    loop {
        let mut header = [0u8; HEADER_LEN];
        read_exact(r, &mut header, index, "header")?;
        if &header[..6] != MAGIC {
            let found = String::from_utf8_lossy(&header[..6]).into_owned();
            return Err(CpioError::BadMagic { index, found });
        }
        let field = |i: usize, name: &'static str| -> Result<u32, CpioError> {
            let raw = &header[6 + 8 * i..14 + 8 * i];
            std::str::from_utf8(raw)
                .ok()
                .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|s| u32::from_str_radix(s, 16).ok())
                .ok_or(CpioError::BadField { index, field: name })
        };
        let mode = field(1, "mode")?;
        let filesize = field(6, "filesize")?;
        let rdev = (field(9, "rdevmajor")?, field(10, "rdevminor")?);
        let namesize = field(11, "namesize")?;
        for (i, name) in [
            (0, "ino"),
            (2, "uid"),
            (3, "gid"),
            (4, "nlink"),
            (5, "mtime"),
            (7, "devmajor"),
            (8, "devminor"),
        ] {
            field(i, name)?;
        }
        if namesize > MAX_NAME {
            return Err(CpioError::TooLarge {
                index,
                field: "namesize",
                value: namesize,
                limit: MAX_NAME,
            });
        }
        if filesize > MAX_FILE {
            return Err(CpioError::TooLarge {
                index,
                field: "filesize",
                value: filesize,
                limit: MAX_FILE,
            });
        }
        let mut name = vec![0u8; namesize as usize];
        read_exact(r, &mut name, index, "name")?;
        let pad = pad4(r.pos);
        skip(r, pad, index)?;
        if name.pop() != Some(0) || name.contains(&0) {
            return Err(CpioError::BadName { index });
        }
        let name = String::from_utf8(name).map_err(|_| CpioError::BadName { index })?;
        let mut data = Vec::new();
        let got = r
            .by_ref()
            .take(filesize as u64)
            .read_to_end(&mut data)
            .map_err(CpioError::Io)?;
        if got < filesize as usize {
            return Err(CpioError::Truncated {
                index,
                what: "file data",
            });
        }
        let pad = pad4(r.pos);
        skip(r, pad, index)?;
        if name == TRAILER {
            return Ok(tree);
        }
        let path = normalise(&name)?;
        let kind = match mode & S_IFMT {
            S_IFREG => NodeKind::File(data),
            S_IFDIR => NodeKind::Dir,
            S_IFLNK => NodeKind::Symlink(
                String::from_utf8(data)
                    .map_err(|_| CpioError::BadSymlink { path: name.clone() })?,
            ),
            S_IFCHR => NodeKind::CharDevice {
                major: rdev.0,
                minor: rdev.1,
            },
            _ => return Err(CpioError::UnsupportedType { path: name, mode }),
        };
        insert(
            &mut tree,
            path,
            Node {
                mode: mode & 0o7777,
                kind,
            },
        )?;
        index += 1;
    }
}

/// Archives made with `find . | cpio` name entries "./x" or ".".
fn normalise(name: &str) -> Result<&str, CpioError> {
    let path = name.trim_start_matches("./").trim_start_matches('/');
    let path = if path == "." { "" } else { path };
    let bad = |reason| {
        Err(CpioError::BadPath {
            path: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("is empty; every entry needs a name");
    }
    if path.split('/').any(|c| c == "..") {
        return bad("contains \"..\"; archive paths must stay inside the root");
    }
    if path.ends_with('/') || path.contains("//") || path.split('/').any(|c| c == ".") {
        return bad("is not a normalised path; rebuild the archive from a clean tree");
    }
    Ok(path)
}

/// FsTree::insert would silently put a child under a file; refuse that and
/// duplicates instead, since the kernel's unpacker would not agree with us.
fn insert(tree: &mut FsTree, path: &str, node: Node) -> Result<(), CpioError> {
    let mut parent = path;
    while let Some((p, _)) = parent.rsplit_once('/') {
        if tree.get(p).is_some_and(|n| n.kind != NodeKind::Dir) {
            return Err(CpioError::BadPath {
                path: path.to_string(),
                reason: "has a parent that is not a directory",
            });
        }
        parent = p;
    }
    if let Some(existing) = tree.get(path) {
        // A directory created implicitly for an earlier child may be listed
        // after it (cpio -o with unsorted input); keep its real mode.
        let implicit_dir = existing.kind == NodeKind::Dir && node.kind == NodeKind::Dir;
        if !implicit_dir {
            return Err(CpioError::Duplicate {
                path: path.to_string(),
            });
        }
    }
    tree.insert(path, node);
    Ok(())
}

struct Counting<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn read_exact<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    index: usize,
    what: &'static str,
) -> Result<(), CpioError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => CpioError::Truncated { index, what },
        _ => CpioError::Io(e),
    })
}

fn skip<R: Read>(r: &mut R, n: usize, index: usize) -> Result<(), CpioError> {
    let mut pad = [0u8; 4];
    read_exact(r, &mut pad[..n], index, "padding")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    const MTIME: u32 = 1_700_000_000;

    fn sample() -> FsTree {
        let mut t = FsTree::new();
        t.file("init", 0o755, b"#!/bin/sh\necho keel\n".to_vec());
        t.file("etc/keel/slot", 0o644, b"a".to_vec());
        t.file("etc/empty", 0o600, Vec::new());
        t.file(
            "lib/modules/x.ko",
            0o644,
            (0..5000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>(),
        );
        t.dir("proc");
        t.symlink("bin/sh", "/init");
        t.insert(
            "dev/console",
            Node {
                mode: 0o600,
                kind: NodeKind::CharDevice { major: 5, minor: 1 },
            },
        );
        t
    }

    fn archive(tree: &FsTree) -> Vec<u8> {
        let mut out = Vec::new();
        write_newc(&mut out, tree, MTIME).unwrap();
        out
    }

    /// Runs host cpio in `dir` with `archive` on stdin.
    fn cpio(args: &[&str], dir: &std::path::Path, archive: &[u8]) -> Vec<u8> {
        let mut child = Command::new("cpio")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cpio not found: install the Debian package cpio");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(archive).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "cpio {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    #[test]
    fn round_trips() {
        let t = sample();
        let bytes = archive(&t);
        assert_eq!(bytes.len() % 512, 0);
        assert_eq!(read_newc(&bytes[..]).unwrap(), t);

        let mut gz = Vec::new();
        write_initramfs_gz(&mut gz, &t, MTIME).unwrap();
        assert_eq!(read_initramfs_gz(&gz[..]).unwrap(), t);
    }

    #[test]
    fn header_fields_are_fixed() {
        let bytes = archive(&sample());
        let first = std::str::from_utf8(&bytes[..HEADER_LEN]).unwrap();
        // ino 1, uid/gid 0, nlink 2 for the "bin" directory, fixed mtime.
        assert_eq!(&first[6..14], "00000001");
        assert_eq!(&first[22..38], "0000000000000000");
        assert_eq!(&first[38..46], "00000002");
        assert_eq!(&first[46..54], format!("{MTIME:08x}"));
    }

    #[test]
    fn gzip_output_is_reproducible() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_initramfs_gz(&mut a, &sample(), MTIME).unwrap();
        write_initramfs_gz(&mut b, &sample(), MTIME).unwrap();
        assert_eq!(a, b);
        // Header mtime is ours, and no file name flag (FNAME, 0x08) is set.
        assert_eq!(&a[4..8], &MTIME.to_le_bytes());
        assert_eq!(a[3] & 0x08, 0);
    }

    #[test]
    fn host_cpio_lists_entries() {
        let dir = tempfile::tempdir().unwrap();
        let listing =
            String::from_utf8(cpio(&["-itv", "--quiet"], dir.path(), &archive(&sample()))).unwrap();
        // Lines end in the name, or in "name -> target" for symlinks.
        let names: Vec<&str> = listing
            .lines()
            .map(|l| l.split(" -> ").next().unwrap().rsplit(' ').next().unwrap())
            .collect();
        let tree = sample();
        let expected: Vec<&str> = tree.iter().map(|(p, _)| p).collect();
        assert_eq!(names, expected);
        let symlink = listing.lines().find(|l| l.contains("bin/sh")).unwrap();
        assert!(
            symlink.starts_with('l') && symlink.ends_with("bin/sh -> /init"),
            "{symlink}"
        );

        let console = listing
            .lines()
            .find(|l| l.ends_with(" dev/console"))
            .unwrap();
        let fields: Vec<&str> = console.split_whitespace().collect();
        assert!(console.starts_with("crw-------"), "{console}");
        assert_eq!(&fields[4..6], ["5,", "1"], "{console}");
    }

    #[test]
    fn host_cpio_extracts_contents() {
        // Creating device nodes needs root; contents are what is checked here.
        let mut t = FsTree::new();
        for (p, n) in sample()
            .iter()
            .filter(|(_, n)| !matches!(n.kind, NodeKind::CharDevice { .. }))
        {
            t.insert(p, n.clone());
        }
        let dir = tempfile::tempdir().unwrap();
        cpio(
            &["-id", "--quiet", "--no-absolute-filenames"],
            dir.path(),
            &archive(&t),
        );
        for (path, node) in t.iter() {
            let on_disk = dir.path().join(path);
            match &node.kind {
                NodeKind::File(data) => {
                    assert_eq!(&std::fs::read(&on_disk).unwrap(), data, "{path}")
                }
                NodeKind::Dir => assert!(on_disk.is_dir(), "{path}"),
                NodeKind::Symlink(target) => assert_eq!(
                    std::fs::read_link(&on_disk).unwrap().to_str(),
                    Some(target.as_str())
                ),
                NodeKind::CharDevice { .. } => unreachable!(),
            }
        }
    }

    #[test]
    fn reads_archive_from_host_cpio() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/hostname"), "keel\n").unwrap();
        std::os::unix::fs::symlink("etc/hostname", dir.path().join("link")).unwrap();
        let list = ".\n./etc\n./etc/hostname\n./link\n";
        let bytes = cpio(
            &["-o", "-H", "newc", "--quiet"],
            dir.path(),
            list.as_bytes(),
        );
        let t = read_newc(&bytes[..]).unwrap();
        assert_eq!(
            t.get("etc/hostname").unwrap().kind,
            NodeKind::File(b"keel\n".to_vec())
        );
        assert_eq!(
            t.get("link").unwrap().kind,
            NodeKind::Symlink("etc/hostname".into())
        );
        assert_eq!(t.get("etc").unwrap().kind, NodeKind::Dir);
    }

    #[test]
    fn rejects_bad_archives() {
        let bytes = archive(&sample());
        let mut bad = bytes.clone();
        bad[0] = b'1';
        assert!(matches!(
            read_newc(&bad[..]),
            Err(CpioError::BadMagic { index: 0, .. })
        ));
        assert!(matches!(
            read_newc(&bytes[..300]),
            Err(CpioError::Truncated { .. })
        ));
        assert!(matches!(
            read_newc(&[][..]),
            Err(CpioError::Truncated {
                index: 0,
                what: "header"
            })
        ));
        let mut bad = bytes.clone();
        bad[54..62].copy_from_slice(b"ffffffff"); // filesize
        let err = read_newc(&bad[..]).unwrap_err();
        assert!(
            matches!(
                err,
                CpioError::TooLarge {
                    field: "filesize",
                    ..
                }
            ),
            "{err}"
        );
        let mut bad = bytes.clone();
        bad[54..62].copy_from_slice(b"0000000g");
        assert!(matches!(
            read_newc(&bad[..]),
            Err(CpioError::BadField {
                field: "filesize",
                ..
            })
        ));

        let mut escape = FsTree::new();
        escape.file("a/../../etc/passwd", 0o644, b"x".to_vec());
        let err = read_newc(&archive(&escape)[..]).unwrap_err();
        assert!(err.to_string().contains(".."), "{err}");

        let mut gz = Vec::new();
        write_initramfs_gz(&mut gz, &sample(), MTIME).unwrap();
        let n = gz.len();
        gz[n - 6] ^= 0xff; // inside the CRC32 trailer
        assert!(read_initramfs_gz(&gz[..]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn read_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096)) {
            let _ = read_newc(&bytes[..]);
            let _ = read_initramfs_gz(&bytes[..]);
        }

        /// Corrupting one byte of a valid archive reaches the deeper checks.
        #[test]
        fn read_never_panics_on_corrupted_archive(at in 0usize..2048, value in proptest::num::u8::ANY) {
            let mut bytes = archive(&sample());
            let at = at % bytes.len();
            bytes[at] = value;
            let _ = read_newc(&bytes[..]);
        }
    }
}
