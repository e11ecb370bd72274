//! Finding a partition by its MBR PARTUUID, the way the kernel's
//! `root=PARTUUID=` does, but in userspace so the initramfs can wait for
//! slow SD cards and explain what it saw when the partition never shows up.
//!
//! An MBR PARTUUID is `SSSSSSSS-NN`: the disk signature (4 bytes, little
//! endian, at byte 440 of the disk) and the partition number in hex.
//! Logical partitions count from 5, as Linux numbers them.
//!
//! All paths are parameters (`Roots`) so the tests can stand temp dirs in
//! for /sys/block and /dev.

use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sys;

/// Byte offset of the disk signature in the MBR.
const SIGNATURE_OFFSET: usize = 440;
const MBR_SIZE: usize = 512;

pub use keel_contract::PartUuid;

/// The disk signature of an MBR sector, or None if the sector has no MBR
/// boot signature (0x55 0xAA), e.g. an unformatted or GPT-only disk.
pub fn mbr_signature(sector: &[u8]) -> Option<u32> {
    if sector.len() < MBR_SIZE || sector[510] != 0x55 || sector[511] != 0xAA {
        return None;
    }
    let b = &sector[SIGNATURE_OFFSET..SIGNATURE_OFFSET + 4];
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Kernel names for partition `n` of `disk`: `sda5`, or `mmcblk0p5` when
/// the disk name ends in a digit. Both are tried, most likely first.
pub fn partition_names(disk: &str, n: u32) -> [String; 2] {
    let plain = format!("{disk}{n}");
    let with_p = format!("{disk}p{n}");
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        [with_p, plain]
    } else {
        [plain, with_p]
    }
}

/// Parses a sysfs `dev` file (`179:5\n`).
pub fn parse_dev_number(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Where block devices are described and where their nodes live.
#[derive(Debug, Clone)]
pub struct Roots {
    pub sys_block: PathBuf,
    pub dev: PathBuf,
}

impl Roots {
    pub fn system() -> Self {
        Self {
            sys_block: PathBuf::from("/sys/block"),
            dev: PathBuf::from("/dev"),
        }
    }
}

/// What one whole disk looked like during a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    pub name: String,
    /// The MBR signature, or why it could not be read.
    pub signature: Result<Option<u32>, String>,
    pub partitions: Vec<String>,
}

/// Everything a scan saw, printed when the wanted partition is missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub disks: Vec<DiskInfo>,
}

impl fmt::Display for Scan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.disks.is_empty() {
            return write!(f, "no disks in /sys/block (is the storage driver loaded?)");
        }
        for (i, d) in self.disks.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let sig = match &d.signature {
                Ok(Some(s)) => format!("signature {s:08x}"),
                Ok(None) => "no MBR".to_string(),
                Err(e) => format!("unreadable ({e})"),
            };
            let parts = if d.partitions.is_empty() {
                "none".to_string()
            } else {
                d.partitions.join(" ")
            };
            write!(f, "disk {}: {sig}; partitions: {parts}", d.name)?;
        }
        Ok(())
    }
}

/// A found partition and its device node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub name: String,
    pub node: PathBuf,
}

fn read_dev_number(dir: &Path) -> io::Result<(u32, u32)> {
    let text = fs::read_to_string(dir.join("dev"))?;
    parse_dev_number(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}/dev: not major:minor: {text:?}", dir.display()),
        )
    })
}

/// Returns `dev/<name>`, creating the block node from sysfs's `dev` when
/// devtmpfs has not (or is not mounted).
pub fn ensure_node(roots: &Roots, sys_dir: &Path, name: &str) -> io::Result<PathBuf> {
    let node = roots.dev.join(name);
    if node.exists() {
        return Ok(node);
    }
    let (major, minor) = read_dev_number(sys_dir)?;
    match sys::mknod_block(&node, major, minor) {
        Ok(()) => Ok(node),
        // devtmpfs may have created it between our check and mknod.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(node),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("mknod {} ({major}:{minor}): {e}", node.display()),
        )),
    }
}

fn read_signature(node: &Path) -> io::Result<Option<u32>> {
    let mut sector = [0u8; MBR_SIZE];
    let mut file = fs::File::open(node)?;
    file.read_exact(&mut sector)?;
    Ok(mbr_signature(&sector))
}

fn sorted_dir_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Looks once through every whole disk for `want` (None: just report).
pub fn scan(roots: &Roots, want: Option<PartUuid>) -> (Option<Found>, Scan) {
    let mut report = Scan::default();
    let mut found = None;
    for disk in sorted_dir_names(&roots.sys_block) {
        let sys_dir = roots.sys_block.join(&disk);
        // A partition directory has a `partition` file; list them for the
        // report whatever their naming scheme.
        let partitions: Vec<String> = sorted_dir_names(&sys_dir)
            .into_iter()
            .filter(|p| sys_dir.join(p).join("partition").is_file())
            .collect();
        let empty = fs::read_to_string(sys_dir.join("size"))
            .map(|s| s.trim() == "0")
            .unwrap_or(false);
        let signature = if empty {
            // Empty card readers and unused loop devices: nothing to read.
            Err("no medium".to_string())
        } else {
            ensure_node(roots, &sys_dir, &disk)
                .and_then(|node| read_signature(&node))
                .map_err(|e| e.to_string())
        };
        let wanted = want.filter(|w| found.is_none() && signature == Ok(Some(w.disk)));
        if let Some(want) = wanted {
            for name in partition_names(&disk, u32::from(want.partition)) {
                let part_dir = sys_dir.join(&name);
                if part_dir.is_dir() {
                    match ensure_node(roots, &part_dir, &name) {
                        Ok(node) => found = Some(Found { name, node }),
                        Err(e) => crate::log!("partition {name}: {e}"),
                    }
                    break;
                }
            }
        }
        report.disks.push(DiskInfo {
            name: disk,
            signature,
            partitions,
        });
    }
    (found, report)
}

/// Polls `scan` until `want` appears or `timeout` passes (like the kernel's
/// rootwait, but bounded so a missing card ends in a readable error).
pub fn wait_for(
    roots: &Roots,
    want: PartUuid,
    timeout: Duration,
    interval: Duration,
) -> Result<Found, Scan> {
    let start = Instant::now();
    loop {
        let (found, report) = scan(roots, Some(want));
        if let Some(found) = found {
            return Ok(found);
        }
        if start.elapsed() >= timeout {
            return Err(report);
        }
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mbr(signature: u32) -> Vec<u8> {
        let mut s = vec![0u8; 4096];
        s[440..444].copy_from_slice(&signature.to_le_bytes());
        s[510] = 0x55;
        s[511] = 0xAA;
        s
    }

    /// A fake /sys/block + /dev pair.
    struct Fake {
        _tmp: tempfile::TempDir,
        roots: Roots,
    }

    impl Fake {
        fn new() -> Self {
            let tmp = tempfile::tempdir().unwrap();
            let roots = Roots {
                sys_block: tmp.path().join("sys/block"),
                dev: tmp.path().join("dev"),
            };
            fs::create_dir_all(&roots.sys_block).unwrap();
            fs::create_dir_all(&roots.dev).unwrap();
            Self { _tmp: tmp, roots }
        }

        /// Adds a disk; the nodes come first so a concurrent scan never
        /// sees a sysfs entry without its node (it would mknod one).
        fn disk(&self, name: &str, content: &[u8], parts: &[&str]) {
            fs::write(self.roots.dev.join(name), content).unwrap();
            for p in parts {
                fs::write(self.roots.dev.join(p), b"").unwrap();
            }
            let d = self.roots.sys_block.join(name);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("size"), format!("{}\n", content.len() / 512)).unwrap();
            fs::write(d.join("dev"), "254:0\n").unwrap();
            for (i, p) in parts.iter().enumerate() {
                fs::create_dir_all(d.join(p)).unwrap();
                fs::write(d.join(p).join("partition"), format!("{}\n", i + 1)).unwrap();
                fs::write(d.join(p).join("dev"), format!("254:{}\n", i + 1)).unwrap();
            }
        }
    }

    #[test]
    fn reads_signature_little_endian() {
        let s = mbr(0xdead_beef);
        assert_eq!(&s[440..444], &[0xef, 0xbe, 0xad, 0xde]);
        assert_eq!(mbr_signature(&s), Some(0xdead_beef));
        let mut no_magic = s.clone();
        no_magic[511] = 0;
        assert_eq!(mbr_signature(&no_magic), None);
        assert_eq!(mbr_signature(&s[..100]), None);
    }

    #[test]
    fn names_partitions_like_the_kernel() {
        assert_eq!(partition_names("sda", 5), ["sda5", "sdap5"]);
        assert_eq!(partition_names("vda", 7)[0], "vda7");
        assert_eq!(partition_names("mmcblk0", 5)[0], "mmcblk0p5");
        assert_eq!(partition_names("nvme0n1", 2)[0], "nvme0n1p2");
    }

    #[test]
    fn parses_dev_numbers() {
        assert_eq!(parse_dev_number("179:5\n"), Some((179, 5)));
        assert_eq!(parse_dev_number("8:0"), Some((8, 0)));
        assert_eq!(parse_dev_number("8"), None);
        assert_eq!(parse_dev_number("a:b"), None);
    }

    #[test]
    fn finds_the_matching_disk_among_several() {
        let f = Fake::new();
        f.disk("mmcblk0", &mbr(0x1111_1111), &["mmcblk0p1", "mmcblk0p5"]);
        f.disk(
            "sda",
            &mbr(0x2222_2222),
            &["sda1", "sda2", "sda3", "sda4", "sda5"],
        );
        let want = PartUuid::from_spec("PARTUUID=22222222-05").unwrap();
        let (found, report) = scan(&f.roots, Some(want));
        let found = found.expect("found");
        assert_eq!(found.name, "sda5");
        assert_eq!(found.node, f.roots.dev.join("sda5"));
        assert_eq!(report.disks.len(), 2);

        let want = PartUuid::from_spec("PARTUUID=11111111-05").unwrap();
        assert_eq!(scan(&f.roots, Some(want)).0.unwrap().name, "mmcblk0p5");
    }

    #[test]
    fn missing_partition_reports_what_was_seen() {
        let f = Fake::new();
        f.disk("vda", &mbr(0x1234_abcd), &["vda1", "vda2"]);
        f.disk("vdb", &[0u8; 1024], &[]);
        let d = f.roots.sys_block.join("loop0");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("size"), "0\n").unwrap();

        let want = PartUuid::from_spec("PARTUUID=1234abcd-05").unwrap();
        let err = wait_for(&f.roots, want, Duration::ZERO, Duration::ZERO).unwrap_err();
        assert_eq!(
            err.to_string(),
            "disk loop0: unreadable (no medium); partitions: none\n\
             disk vda: signature 1234abcd; partitions: vda1 vda2\n\
             disk vdb: no MBR; partitions: none"
        );
    }

    #[test]
    fn short_disk_is_reported_not_fatal() {
        let f = Fake::new();
        f.disk("vda", &[0u8; 100], &[]);
        let want = PartUuid::from_spec("PARTUUID=1234abcd-05").unwrap();
        let (found, report) = scan(&f.roots, Some(want));
        assert!(found.is_none());
        assert!(report.disks[0].signature.is_err());
    }

    #[test]
    fn no_disks_says_so() {
        let f = Fake::new();
        let want = PartUuid::from_spec("PARTUUID=1234abcd-05").unwrap();
        let err = wait_for(&f.roots, want, Duration::ZERO, Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("no disks"), "{err}");
    }

    #[test]
    fn waits_until_the_partition_appears() {
        let f = Fake::new();
        let roots = f.roots.clone();
        let want = PartUuid::from_spec("PARTUUID=abcdef01-02").unwrap();
        let t = std::thread::spawn(move || {
            wait_for(
                &roots,
                want,
                Duration::from_secs(5),
                Duration::from_millis(10),
            )
        });
        std::thread::sleep(Duration::from_millis(50));
        f.disk("vda", &mbr(0xabcd_ef01), &["vda1", "vda2"]);
        let found = t.join().unwrap().expect("appeared");
        assert_eq!(found.name, "vda2");
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_sector_is_safe(sector in proptest::collection::vec(any::<u8>(), 0..1024)) {
                let _ = mbr_signature(&sector);
            }
        }
    }
}
