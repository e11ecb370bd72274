//! The writable data partition: an ext4 filesystem made by the host's
//! `mkfs.ext4` (no pure-Rust ext4 writer is good enough) straight into the
//! image file, reproducibly, and its label and UUID read back.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

const BLOCK: u64 = 4096;
const SUPERBLOCK_AT: u64 = 1024;
const MAGIC: u16 = 0xEF53;
/// ext4's on-disk label field is 16 bytes.
const LABEL_MAX: usize = 16;

/// Used instead of the host's /etc/mke2fs.conf so every build host makes
/// the same filesystem (Debian's defaults as of e2fsprogs 1.47). No
/// orphan_file or metadata_csum_seed: older board kernels cannot mount them.
const MKE2FS_CONF: &str = "[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
\treserved_ratio = 5.0

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

/// The pinned mke2fs.conf in a private temporary file, removed on drop.
struct Config(PathBuf);

impl Config {
    fn create() -> Result<Self, Ext4Error> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("keel-mke2fs-{}-{n}.conf", std::process::id()));
        let io = |source| Ext4Error::Io {
            what: "writing",
            path: path.clone(),
            source,
        };
        // create_new: never follow a link someone else planted in /tmp.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io)?;
        f.write_all(MKE2FS_CONF.as_bytes()).map_err(io)?;
        Ok(Self(path))
    }
}

impl Drop for Config {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error(
        "{tool} is not installed; install the Debian package {package} (apt-get install {package})"
    )]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("ext4 label {0:?} is too long or not ASCII; use at most 16 ASCII characters")]
    Label(String),
    #[error("the data partition of {0} bytes is smaller than one 4 KiB block; raise its size in the board config")]
    TooSmall(u64),
    #[error("mkfs.ext4 failed ({status}) on {image} at byte {offset}: {output}")]
    Mkfs {
        image: PathBuf,
        offset: u64,
        status: String,
        output: String,
    },
    #[error("no ext4 superblock at byte {offset} of {image} (magic {found:#06x}, expected 0xef53); the data partition is not formatted")]
    NotExt4 {
        image: PathBuf,
        offset: u64,
        found: u16,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Finds `tool` in `dirs`; sbin directories are searched explicitly because
/// they are often not on an unprivileged user's PATH.
fn locate(tool: &'static str, dirs: &[PathBuf]) -> Result<PathBuf, Ext4Error> {
    dirs.iter()
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or(Ext4Error::MissingTool {
            tool,
            package: "e2fsprogs",
        })
}

fn tool_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs
}

fn uuid_text(u: &[u8; 16]) -> String {
    let h = |r: std::ops::Range<usize>| u[r].iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        h(0..4),
        h(4..6),
        h(6..8),
        h(8..10),
        h(10..16)
    )
}

/// Formats `[offset_bytes, offset_bytes + size_bytes)` of `image` as ext4
/// with 4 KiB blocks, leaving every other byte of the file untouched. Every
/// id and time comes from the arguments, so the same inputs give the same
/// bytes (given the region held the same bytes before; a fresh image is
/// all zeros).
pub fn make_ext4(
    image: &Path,
    offset_bytes: u64,
    size_bytes: u64,
    label: &str,
    uuid: [u8; 16],
    hash_seed: [u8; 16],
    timestamp: u64,
) -> Result<(), Ext4Error> {
    if label.len() > LABEL_MAX || !label.is_ascii() {
        return Err(Ext4Error::Label(label.to_string()));
    }
    let blocks = size_bytes / BLOCK;
    if blocks == 0 {
        return Err(Ext4Error::TooSmall(size_bytes));
    }
    let mkfs = locate("mkfs.ext4", &tool_dirs())?;
    let config = Config::create()?;
    let extended = [
        format!("offset={offset_bytes}"),
        format!("hash_seed={}", uuid_text(&hash_seed)),
        "root_owner=0:0".to_string(),
        // Initialise inode tables and journal now: nothing is left for the
        // device to do at first mount, and no stale bytes survive.
        "lazy_itable_init=0".to_string(),
        "lazy_journal_init=0".to_string(),
        // Discarding a regular file punches holes, which must never reach
        // past our region; the region is fresh anyway.
        "nodiscard".to_string(),
    ]
    .join(",");
    let out = Command::new(&mkfs)
        .env("MKE2FS_CONFIG", &config.0)
        .env("E2FSPROGS_FAKE_TIME", timestamp.to_string())
        .env("SOURCE_DATE_EPOCH", timestamp.to_string())
        .args(["-F", "-q", "-t", "ext4", "-b", "4096", "-L", label])
        .args(["-U", &uuid_text(&uuid), "-E", &extended])
        .arg(image)
        .arg(blocks.to_string())
        .output()
        .map_err(|source| Ext4Error::Io {
            what: "running",
            path: mkfs.clone(),
            source,
        })?;
    drop(config);
    // mke2fs reports some problems (an undefined fs type, say) on stdout and
    // carries on under -F; treat any output as a failure to notice them.
    if !out.status.success() || !out.stdout.is_empty() {
        return Err(Ext4Error::Mkfs {
            image: image.to_owned(),
            offset: offset_bytes,
            status: out.status.to_string(),
            output: String::from_utf8_lossy(&[out.stdout, out.stderr].concat())
                .trim()
                .to_string(),
        });
    }
    Ok(())
}

/// The label and UUID of the ext4 filesystem at `offset_bytes` of `image`,
/// read from its superblock.
pub fn read_label_uuid(image: &Path, offset_bytes: u64) -> Result<(String, [u8; 16]), Ext4Error> {
    let io = |what| {
        move |source| Ext4Error::Io {
            what,
            path: image.to_owned(),
            source,
        }
    };
    let mut f = File::open(image).map_err(io("opening"))?;
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(offset_bytes + SUPERBLOCK_AT))
        .map_err(io("seeking in"))?;
    f.read_exact(&mut sb)
        .map_err(io("reading the ext4 superblock of"))?;
    let found = u16::from_le_bytes([sb[0x38], sb[0x39]]);
    if found != MAGIC {
        return Err(Ext4Error::NotExt4 {
            image: image.to_owned(),
            offset: offset_bytes,
            found,
        });
    }
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&sb[0x68..0x78]);
    let name = &sb[0x78..0x88];
    let end = name.iter().position(|&b| b == 0).unwrap_or(LABEL_MAX);
    Ok((String::from_utf8_lossy(&name[..end]).into_owned(), uuid))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const OFFSET: u64 = 3 * MIB;
    const SIZE: u64 = 64 * MIB;
    const UUID: [u8; 16] = [
        0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef, 0x81, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
        0xef,
    ];
    const SEED: [u8; 16] = [7; 16];
    const TIME: u64 = 1_700_000_000;

    /// An image with a pattern before and after the region.
    fn image() -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let len = (OFFSET + SIZE + 2 * MIB) as usize;
        std::fs::write(
            f.path(),
            (0..len).map(|i| (i % 251) as u8 | 1).collect::<Vec<u8>>(),
        )
        .unwrap();
        // The region itself starts zeroed, as in a freshly sized image.
        let mut bytes = std::fs::read(f.path()).unwrap();
        bytes[OFFSET as usize..(OFFSET + SIZE) as usize].fill(0);
        std::fs::write(f.path(), bytes).unwrap();
        f
    }

    fn region(img: &Path) -> Vec<u8> {
        std::fs::read(img).unwrap()[OFFSET as usize..(OFFSET + SIZE) as usize].to_vec()
    }

    fn tool(name: &'static str) -> PathBuf {
        locate(name, &tool_dirs()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn formats_only_its_region_and_reads_back() {
        let img = image();
        let before = std::fs::read(img.path()).unwrap();
        make_ext4(img.path(), OFFSET, SIZE, "keel-data", UUID, SEED, TIME).unwrap();
        let after = std::fs::read(img.path()).unwrap();
        assert_eq!(after.len(), before.len(), "the image was resized");
        assert!(
            after[..OFFSET as usize] == before[..OFFSET as usize],
            "bytes before the partition changed"
        );
        let end = (OFFSET + SIZE) as usize;
        assert!(
            after[end..] == before[end..],
            "bytes after the partition changed"
        );
        assert_eq!(
            read_label_uuid(img.path(), OFFSET).unwrap(),
            ("keel-data".to_string(), UUID)
        );
    }

    #[test]
    fn e2fsck_and_dumpe2fs_accept_it() {
        let img = image();
        make_ext4(img.path(), OFFSET, SIZE, "keel-data", UUID, SEED, TIME).unwrap();
        let part = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(part.path(), region(img.path())).unwrap();
        let out = Command::new(tool("e2fsck"))
            .arg("-fn")
            .arg(part.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "e2fsck -fn: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(tool("dumpe2fs"))
            .arg("-h")
            .arg(part.path())
            .env("TZ", "UTC")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        for want in [
            "Filesystem volume name:   keel-data",
            "Filesystem UUID:          12345678-9abc-4def-8123-456789abcdef",
            "Directory Hash Seed:      07070707-0707-0707-0707-070707070707",
            "Block size:               4096",
            "Block count:              16384",
            "Filesystem created:       Tue Nov 14 22:13:20 2023",
            "Filesystem features:      has_journal ext_attr resize_inode dir_index filetype extent 64bit flex_bg sparse_super large_file huge_file dir_nlink extra_isize metadata_csum\n",
            "Maximum mount count:      -1",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
        let out = Command::new(tool("debugfs"))
            .args(["-R", "stat /"])
            .arg(part.path())
            .env("TZ", "UTC")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("User:     0   Group:     0"), "{text}");
        assert!(
            text.contains("Tue Nov 14 22:13:20 2023"),
            "root inode time not fixed:\n{text}"
        );
    }

    #[test]
    fn two_runs_are_byte_identical() {
        let a = image();
        make_ext4(a.path(), OFFSET, SIZE, "keel-data", UUID, SEED, TIME).unwrap();
        // A later wall-clock second must not show in the bytes.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let b = image();
        make_ext4(b.path(), OFFSET, SIZE, "keel-data", UUID, SEED, TIME).unwrap();
        assert!(region(a.path()) == region(b.path()), "ext4 builds differ");
        let config = Config::create().unwrap();
        let path = config.0.clone();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), MKE2FS_CONF);
        drop(config);
        assert!(!path.exists(), "the temporary mke2fs.conf was left behind");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let img = image();
        assert!(matches!(
            make_ext4(
                img.path(),
                OFFSET,
                SIZE,
                "a-label-longer-than-16",
                UUID,
                SEED,
                0
            ),
            Err(Ext4Error::Label(_))
        ));
        assert!(matches!(
            make_ext4(img.path(), OFFSET, 100, "x", UUID, SEED, 0),
            Err(Ext4Error::TooSmall(100))
        ));
        assert!(matches!(
            read_label_uuid(img.path(), OFFSET),
            Err(Ext4Error::NotExt4 { .. })
        ));
        let err = make_ext4(img.path(), OFFSET, 8 * 4096, "x", UUID, SEED, 0).unwrap_err();
        assert!(matches!(err, Ext4Error::Mkfs { .. }), "{err}");
        let err = locate("mkfs.ext4", &[]).unwrap_err();
        assert!(
            err.to_string().contains("apt-get install e2fsprogs"),
            "{err}"
        );
    }
}
