//! A device's identity on the card: files written into the data
//! partition's ext4 where the agent reads them (keel_contract::paths:
//! `/data/keel/identity/` and `/data/keel/claim/`), owned by root, the
//! private keys mode 0600 in 0700 directories.
//!
//! The writing is done by e2fsprogs' `debugfs` (a build tool already),
//! pointed at the partition inside the whole card with its
//! `DEVICE?offset=BYTES` syntax, so the kernel never has to re-read the
//! card's new partition table (which would also wake desktop automounters).
//! debugfs exits 0 even when a command fails, so nothing it says is
//! trusted: every file is read back, its bytes, mode and owner compared,
//! and `e2fsck -fn` must find the filesystem clean.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use keel_contract::{partition, paths};

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error(
        "{tool} is not installed; install the Debian package e2fsprogs (apt-get install e2fsprogs)"
    )]
    MissingTool { tool: &'static str },
    #[error(
        "the image {path} has no data partition (partition {}) in its partition table: {detail}",
        partition::DATA
    )]
    NoDataPartition { path: PathBuf, detail: String },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} on the card's data partition failed: {detail}")]
    Tool { what: String, detail: String },
    #[error("{path} on the card reads back wrong ({detail}); the card is not usable")]
    ReadBack { path: String, detail: String },
}

/// Where the data partition lies on the card (bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPartition {
    pub offset: u64,
    pub size: u64,
}

/// The data partition of an image (or a card written with one), from its
/// partition table.
pub fn data_partition(image: &Path) -> Result<DataPartition, CardError> {
    let bad = |detail: String| CardError::NoDataPartition {
        path: image.to_path_buf(),
        detail,
    };
    let mut f = File::open(image).map_err(|e| bad(e.to_string()))?;
    let table =
        card_format::mbr::PartitionTable::read_from(&mut f).map_err(|e| bad(e.to_string()))?;
    let p = table
        .get(partition::DATA)
        .ok_or_else(|| bad("it is not there".into()))?;
    Ok(DataPartition {
        offset: p.start_lba * card_format::mbr::SECTOR,
        size: p.sectors * card_format::mbr::SECTOR,
    })
}

/// One file to put on the data partition.
#[derive(Clone, PartialEq, Eq)]
pub struct CardFile {
    /// Absolute device path under /data (e.g. `/data/keel/identity/device.key`).
    pub device_path: String,
    pub bytes: Vec<u8>,
    pub mode: u32,
}

impl std::fmt::Debug for CardFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({:o}, {} bytes)",
            self.device_path,
            self.mode,
            self.bytes.len()
        )
    }
}

impl CardFile {
    pub fn new(dir: &str, name: &str, bytes: impl Into<Vec<u8>>, mode: u32) -> CardFile {
        CardFile {
            device_path: format!("{dir}/{name}"),
            bytes: bytes.into(),
            mode,
        }
    }

    /// The path inside the data partition's filesystem.
    fn inside(&self) -> &str {
        paths::on_data_partition(&self.device_path).unwrap_or(&self.device_path)
    }
}

/// The directories the files live in, parents first, with their modes:
/// a directory holding a private key is 0700, others 0755.
fn directories(files: &[CardFile]) -> Vec<(String, u32)> {
    let mut dirs: Vec<(String, u32)> = Vec::new();
    for f in files {
        let inside = f.inside();
        for (i, _) in inside.match_indices('/') {
            let d = &inside[..i];
            if !dirs.iter().any(|(x, _)| x == d) {
                let private = files.iter().any(|g| {
                    g.mode & 0o077 == 0 && g.inside().rsplit_once('/').map(|(p, _)| p) == Some(d)
                });
                dirs.push((d.to_string(), if private { 0o700 } else { 0o755 }));
            }
        }
    }
    dirs
}

fn tool(name: &'static str) -> Result<PathBuf, CardError> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(CardError::MissingTool { tool: name })
}

/// `debugfs`'s and `e2fsck`'s name for the partition inside the card.
fn at_offset(target: &Path, part: DataPartition) -> String {
    format!("{}?offset={}", target.display(), part.offset)
}

/// A private scratch directory for the files debugfs copies from, in
/// memory when /dev/shm is writable (the private keys then never touch
/// the host's disk), else in the temporary directory; removed on drop.
pub(crate) fn scratch() -> Result<tempfile::TempDir, CardError> {
    let base = Path::new("/dev/shm");
    let made = tempfile::Builder::new()
        .prefix("keel-burn-")
        .tempdir_in(base)
        .or_else(|_| tempfile::Builder::new().prefix("keel-burn-").tempdir());
    let dir = made.map_err(|source| CardError::Io {
        what: "make a scratch directory for",
        path: base.to_path_buf(),
        source,
    })?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).map_err(
        |source| CardError::Io {
            what: "restrict",
            path: dir.path().to_path_buf(),
            source,
        },
    )?;
    Ok(dir)
}

fn debugfs(
    target: &Path,
    part: DataPartition,
    args: &[&str],
) -> Result<(String, String), CardError> {
    let out = Command::new(tool("debugfs")?)
        .args(args)
        .arg(at_offset(target, part))
        .output()
        .map_err(|source| CardError::Io {
            what: "run debugfs on",
            path: target.to_path_buf(),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        return Err(CardError::Tool {
            what: format!("debugfs {}", args.join(" ")),
            detail: stderr.trim().to_string(),
        });
    }
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), stderr))
}

/// Writes `files` (replacing any already there), owned by root with their
/// modes, then reads each back and checks bytes, mode and owner, and has
/// e2fsck check the filesystem.
pub fn write_files(
    target: &Path,
    part: DataPartition,
    files: &[CardFile],
) -> Result<(), CardError> {
    let dir = scratch()?;
    let mut script = String::new();
    for (d, mode) in directories(files) {
        // mkdir of an existing directory only complains; the read-back
        // below is what decides.
        script += &format!(
            "mkdir {d}\nsif {d} mode 0{:o}\nsif {d} uid 0\nsif {d} gid 0\n",
            0o40000 | mode
        );
    }
    for (i, f) in files.iter().enumerate() {
        let local = dir.path().join(i.to_string());
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&local)
            .map_err(|source| CardError::Io {
                what: "write",
                path: local.clone(),
                source,
            })?;
        out.write_all(&f.bytes).map_err(|source| CardError::Io {
            what: "write",
            path: local.clone(),
            source,
        })?;
        let p = f.inside();
        script += &format!(
            "rm {p}\nwrite {} {p}\nsif {p} mode 0{:o}\nsif {p} uid 0\nsif {p} gid 0\n",
            local.display(),
            0o100000 | f.mode
        );
    }
    let cmds = dir.path().join("commands");
    std::fs::write(&cmds, script).map_err(|source| CardError::Io {
        what: "write",
        path: cmds.clone(),
        source,
    })?;
    let cmds = cmds.to_string_lossy().into_owned();
    debugfs(target, part, &["-w", "-f", &cmds])?;
    drop(dir);
    drop_cache(target, part)?;
    for f in files {
        check_file(target, part, f)?;
    }
    fsck(target, part)
}

/// Drops the page cache over the partition so what is read next comes
/// from the card (on a block device debugfs goes through the cache).
fn drop_cache(target: &Path, part: DataPartition) -> Result<(), CardError> {
    let f = File::open(target).map_err(|source| CardError::Io {
        what: "open",
        path: target.to_path_buf(),
        source,
    })?;
    f.sync_all().map_err(|source| CardError::Io {
        what: "sync",
        path: target.to_path_buf(),
        source,
    })?;
    crate::sys::drop_cache(&f, part.offset, part.size).map_err(|source| CardError::Io {
        what: "drop the page cache of",
        path: target.to_path_buf(),
        source,
    })
}

/// Reads a file back from the card; `None` if it is not there.
pub fn read_file(
    target: &Path,
    part: DataPartition,
    device_path: &str,
) -> Result<Option<Vec<u8>>, CardError> {
    let inside = paths::on_data_partition(device_path).unwrap_or(device_path);
    let dir = scratch()?;
    let local = dir.path().join("out");
    let (_, stderr) = debugfs(
        target,
        part,
        &["-R", &format!("dump {inside} {}", local.display())],
    )?;
    match std::fs::read(&local) {
        Ok(b) => Ok(Some(b)),
        Err(_) if stderr.contains("not found") => Ok(None),
        Err(source) => Err(CardError::Io {
            what: "read what debugfs dumped from",
            path: target.to_path_buf(),
            source,
        }),
    }
}

/// (mode, uid, gid) of a path on the card, as `debugfs stat` reports it.
pub fn file_owner_mode(
    target: &Path,
    part: DataPartition,
    device_path: &str,
) -> Result<(u32, u32, u32), CardError> {
    let inside = paths::on_data_partition(device_path).unwrap_or(device_path);
    let (out, stderr) = debugfs(target, part, &["-R", &format!("stat {inside}")])?;
    let field = |name: &str| -> Option<&str> {
        let rest = &out[out.find(name)? + name.len()..];
        rest.split_whitespace().next()
    };
    let parse = || -> Option<(u32, u32, u32)> {
        Some((
            u32::from_str_radix(field("Mode:")?, 8).ok()?,
            field("User:")?.parse().ok()?,
            field("Group:")?.parse().ok()?,
        ))
    };
    parse().ok_or_else(|| CardError::ReadBack {
        path: device_path.to_string(),
        detail: format!("debugfs stat said {:?}", stderr.trim()),
    })
}

fn check_file(target: &Path, part: DataPartition, f: &CardFile) -> Result<(), CardError> {
    let wrong = |detail: String| CardError::ReadBack {
        path: f.device_path.clone(),
        detail,
    };
    match read_file(target, part, &f.device_path)? {
        Some(b) if b == f.bytes => {}
        Some(_) => return Err(wrong("its bytes differ from what was written".into())),
        None => return Err(wrong("it is missing".into())),
    }
    let (mode, uid, gid) = file_owner_mode(target, part, &f.device_path)?;
    if (mode, uid, gid) != (f.mode, 0, 0) {
        return Err(wrong(format!(
            "mode {mode:o} owner {uid}:{gid}, expected {:o} 0:0",
            f.mode
        )));
    }
    Ok(())
}

/// `e2fsck -fn` on the partition: it must find nothing to fix.
pub fn fsck(target: &Path, part: DataPartition) -> Result<(), CardError> {
    let out = Command::new(tool("e2fsck")?)
        .args(["-fn"])
        .arg(at_offset(target, part))
        .output()
        .map_err(|source| CardError::Io {
            what: "run e2fsck on",
            path: target.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        return Err(CardError::Tool {
            what: "e2fsck -fn".into(),
            detail: String::from_utf8_lossy(&[out.stdout, out.stderr].concat())
                .trim()
                .to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_directories_are_private_and_parents_are_not() {
        let files = [
            CardFile::new(paths::IDENTITY_DIR, paths::IDENTITY_CERTIFICATE, "c", 0o644),
            CardFile::new(paths::IDENTITY_DIR, paths::IDENTITY_KEY, "k", 0o600),
            CardFile::new(paths::CLAIM_DIR, paths::CLAIM_KEY, "k", 0o600),
        ];
        assert_eq!(
            directories(&files),
            [
                ("keel".to_string(), 0o755),
                ("keel/identity".to_string(), 0o700),
                ("keel/claim".to_string(), 0o700),
            ]
        );
    }
}
