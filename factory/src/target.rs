//! Which disk a burn may write: everything `burn` refuses, decided from
//! what the kernel says in /sys, /proc and /dev before a byte is written.
//!
//! A card is refused when it (or one of its partitions) is mounted, holds
//! the running system's root, is used as swap or by device-mapper/RAID,
//! has no medium, is smaller than the image, is a partition rather than a
//! whole disk, or is not a block device at all; and, unless `--force`,
//! when the kernel does not call it removable (an SD card in a USB reader
//! or a built-in SD slot is; an internal or external hard disk is not).
//!
//! Every read goes through a [`Sysroot`], normally `/`. Tests point it at
//! a fake tree (`burn --sysroot`, hidden, for tests only), where a regular
//! file under `dev/` stands for a block device, so no real disk is ever
//! looked at, let alone written.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Where /sys, /proc and /dev are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysroot {
    root: PathBuf,
}

impl Sysroot {
    /// The running system.
    pub fn real() -> Sysroot {
        Sysroot {
            root: PathBuf::from("/"),
        }
    }

    /// A fake tree (tests): `root/sys`, `root/proc`, `root/dev`.
    pub fn fake(root: &Path) -> Sysroot {
        Sysroot {
            root: root.to_path_buf(),
        }
    }

    pub fn is_real(&self) -> bool {
        self.root == Path::new("/")
    }

    /// An absolute path of the running system, inside this root.
    pub fn path(&self, abs: &Path) -> PathBuf {
        self.root.join(abs.strip_prefix("/").unwrap_or(abs))
    }

    fn read(&self, abs: &str) -> Option<String> {
        std::fs::read_to_string(self.path(Path::new(abs)))
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn class_block(&self, name: &str) -> PathBuf {
        self.path(Path::new("/sys/class/block")).join(name)
    }
}

/// Why a target is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The device or file does not exist.
    Missing,
    NotBlockDevice {
        kind: &'static str,
    },
    /// A file target that is a block device after all.
    BlockDeviceAsFile,
    Partition {
        disk: Option<String>,
    },
    HoldsRoot {
        via: String,
    },
    Mounted {
        what: String,
        at: String,
    },
    Swap {
        what: String,
    },
    Held {
        what: String,
        by: String,
    },
    /// A loop device reads this file.
    LoopBacking {
        device: String,
    },
    /// A file target's directory does not exist.
    NoDirectory {
        dir: PathBuf,
    },
    /// A file target that is the image being burned.
    SameAsImage,
    NoMedium,
    NotRemovable,
    TooSmall {
        size: u64,
        needed: u64,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Missing => write!(f, "it does not exist (list disks with `lsblk -o NAME,SIZE,RM,MODEL,MOUNTPOINTS`)"),
            Refusal::NotBlockDevice { kind } => write!(f, "it is {kind}, not a block device (to write an image file, name it with --file)"),
            Refusal::BlockDeviceAsFile => write!(f, "it is a block device; name it with --device so it is checked like one"),
            Refusal::Partition { disk: Some(d) } => write!(f, "it is a partition; name the whole card (/dev/{d})"),
            Refusal::Partition { disk: None } => write!(f, "it is a partition; name the whole card"),
            Refusal::HoldsRoot { via } => write!(f, "it holds the running system's root filesystem ({via})"),
            Refusal::Mounted { what, at } => write!(f, "{what} is mounted at {at} (unmount it: umount {at})"),
            Refusal::Swap { what } => write!(f, "{what} is in use as swap (swapoff /dev/{what})"),
            Refusal::Held { what, by } => write!(f, "{what} is in use by {by} (device-mapper, LVM or RAID)"),
            Refusal::LoopBacking { device } => write!(f, "it is attached to {device} (losetup -d {device})"),
            Refusal::NoDirectory { dir } => write!(f, "its directory {} does not exist", dir.display()),
            Refusal::SameAsImage => write!(f, "it is the image being burned"),
            Refusal::NoMedium => write!(f, "the reader reports no medium (insert the card)"),
            Refusal::NotRemovable => write!(f, "the kernel does not call it removable, so it may be a fixed disk (pass --force if it really is the card)"),
            Refusal::TooSmall { size, needed } => write!(f, "it holds {size} bytes, less than the image's {needed}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("refusing to write {target}: {}", list(.reasons))]
    Refused {
        target: PathBuf,
        reasons: Vec<Refusal>,
    },
}

fn list(reasons: &[Refusal]) -> String {
    reasons
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A block device that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// What the user named.
    pub named: PathBuf,
    /// What is opened (inside the sysroot).
    pub path: PathBuf,
    /// The kernel's name (`sdb`, `mmcblk0`).
    pub name: String,
    pub size: u64,
    pub removable: bool,
    /// Vendor and model, as the kernel reports them.
    pub description: String,
}

/// The mounts of the running system: (major:minor, source, mount point).
fn mounts(sys: &Sysroot) -> Vec<(String, String, String)> {
    let text = sys.read("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            Some((
                f.get(2)?.to_string(),
                f.get(dash + 2).map_or("", |s| s).to_string(),
                unescape(f.get(4)?),
            ))
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as octal escapes.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// major:minor → kernel name, for every block device.
fn devnums(sys: &Sysroot) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(sys.path(Path::new("/sys/class/block"))) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(dev) = sys.read(&format!("/sys/class/block/{name}/dev")) {
                map.insert(dev, name);
            }
        }
    }
    map
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The disk and its partitions (kernel names).
fn family(sys: &Sysroot, disk: &str) -> Vec<String> {
    let mut out = vec![disk.to_string()];
    let dir = sys.class_block(disk);
    let mut parts: Vec<String> = entries(&dir)
        .into_iter()
        .filter(|n| dir.join(n).join("partition").exists())
        .collect();
    parts.sort();
    out.extend(parts);
    out
}

/// Every device `name` is built on (through device-mapper or RAID
/// `slaves`), and the disk of each partition among them.
fn underlying(sys: &Sysroot, name: &str, depth: u32, out: &mut Vec<String>) {
    if depth > 16 || out.iter().any(|n| n == name) {
        return;
    }
    out.push(name.to_string());
    let dir = sys.class_block(name);
    if dir.join("partition").exists() {
        if let Some(disk) = parent_disk(sys, name) {
            underlying(sys, &disk, depth + 1, out);
        }
    }
    for slave in entries(&dir.join("slaves")) {
        underlying(sys, &slave, depth + 1, out);
    }
}

/// The disk a partition belongs to: its sysfs directory's parent.
fn parent_disk(sys: &Sysroot, part: &str) -> Option<String> {
    let real = std::fs::canonicalize(sys.class_block(part)).ok()?;
    let disk = real.parent()?.file_name()?.to_string_lossy().into_owned();
    sys.class_block(&disk).exists().then_some(disk)
}

/// How the running system's root filesystem is reached, device by device.
fn root_devices(sys: &Sysroot) -> Vec<String> {
    let numbers = devnums(sys);
    let mut out = Vec::new();
    for (devnum, source, at) in mounts(sys) {
        if at != "/" {
            continue;
        }
        let name = numbers.get(&devnum).cloned().or_else(|| {
            // overlay or tmpfs roots (containers) have no device number;
            // their source may still name one.
            let base = Path::new(&source)
                .file_name()?
                .to_string_lossy()
                .into_owned();
            sys.class_block(&base).exists().then_some(base)
        });
        if let Some(n) = name {
            underlying(sys, &n, 0, &mut out);
        }
    }
    out
}

/// Looks up `named` and returns it with every reason to refuse it. A
/// device that cannot be looked at is refused with the reason why.
pub fn inspect_device(
    sys: &Sysroot,
    named: &Path,
    image_size: u64,
    force: bool,
) -> (Option<BlockDevice>, Vec<Refusal>) {
    let inside = sys.path(named);
    // /dev/disk/by-id/… names are symlinks to the kernel's node.
    let path = if sys.is_real() {
        std::fs::canonicalize(&inside).unwrap_or(inside)
    } else {
        inside
    };
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(_) => return (None, vec![Refusal::Missing]),
    };
    let ft = meta.file_type();
    let fake_device = !sys.is_real() && ft.is_file();
    if !ft.is_block_device() && !fake_device {
        let kind = if ft.is_dir() {
            "a directory"
        } else if ft.is_file() {
            "a regular file"
        } else if ft.is_char_device() {
            "a character device"
        } else {
            "not a disk"
        };
        return (None, vec![Refusal::NotBlockDevice { kind }]);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let sysdir = sys.class_block(&name);
    let mut reasons = Vec::new();
    if !sysdir.exists() {
        return (
            None,
            vec![Refusal::NotBlockDevice {
                kind: "unknown to /sys/class/block",
            }],
        );
    }
    if ft.is_block_device() {
        // The node's numbers must be the sysfs entry's, or the name lies.
        let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
        if sys.read(&format!("/sys/class/block/{name}/dev")) != Some(format!("{major}:{minor}")) {
            return (
                None,
                vec![Refusal::NotBlockDevice {
                    kind: "a node whose numbers do not match /sys",
                }],
            );
        }
    }
    if sysdir.join("partition").exists() {
        reasons.push(Refusal::Partition {
            disk: parent_disk(sys, &name),
        });
    }
    let family = family(sys, &name);
    let numbers = devnums(sys);
    let number_of = |n: &str| {
        numbers
            .iter()
            .find(|(_, v)| *v == n)
            .map(|(k, _)| k.clone())
    };
    let roots = root_devices(sys);
    // The first of the root's chain (filesystem, then what it is built
    // on) that is on this disk: the partition, if it is one.
    if let Some(via) = roots.iter().find(|n| family.contains(n)) {
        reasons.push(Refusal::HoldsRoot {
            via: format!("/dev/{via}"),
        });
    } else {
        for (devnum, _, at) in mounts(sys) {
            if let Some(what) = family
                .iter()
                .find(|n| number_of(n).as_deref() == Some(&devnum))
            {
                reasons.push(Refusal::Mounted {
                    what: format!("/dev/{what}"),
                    at,
                });
            }
        }
    }
    let swaps = sys.read("/proc/swaps").unwrap_or_default();
    for line in swaps.lines().skip(1) {
        let dev = line.split_whitespace().next().unwrap_or("");
        let base = Path::new(dev)
            .file_name()
            .map(|b| b.to_string_lossy().into_owned());
        if let Some(what) = family.iter().find(|n| Some(n.as_str()) == base.as_deref()) {
            reasons.push(Refusal::Swap { what: what.clone() });
        }
    }
    for n in &family {
        for by in entries(&sys.class_block(n).join("holders")) {
            reasons.push(Refusal::Held {
                what: format!("/dev/{n}"),
                by,
            });
        }
    }
    let sectors: u64 = sys
        .read(&format!("/sys/class/block/{name}/size"))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // sysfs counts 512-byte sectors whatever the device's block size.
    let size = sectors.saturating_mul(512);
    if size == 0 {
        reasons.push(Refusal::NoMedium);
    } else if size < image_size {
        reasons.push(Refusal::TooSmall {
            size,
            needed: image_size,
        });
    }
    let removable = sys.read(&format!("/sys/class/block/{name}/removable")).as_deref() == Some("1")
        // A built-in SD slot (mmc) reports removable 0; the card is.
        || sys.read(&format!("/sys/class/block/{name}/device/type")).as_deref() == Some("SD");
    if !removable && !force {
        reasons.push(Refusal::NotRemovable);
    }
    let description = ["vendor", "model"]
        .iter()
        .filter_map(|f| sys.read(&format!("/sys/class/block/{name}/device/{f}")))
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let dev = BlockDevice {
        named: named.to_path_buf(),
        path,
        name,
        size,
        removable,
        description,
    };
    (Some(dev), reasons)
}

/// The device, if nothing stands against writing `image_size` bytes to it.
pub fn check_device(
    sys: &Sysroot,
    named: &Path,
    image_size: u64,
    force: bool,
) -> Result<BlockDevice, TargetError> {
    match inspect_device(sys, named, image_size, force) {
        (Some(dev), reasons) if reasons.is_empty() => Ok(dev),
        (_, reasons) => Err(TargetError::Refused {
            target: named.to_path_buf(),
            reasons,
        }),
    }
}

/// A file target: a regular file (made if missing), never a block device
/// (that goes through [`check_device`]) nor a loop device's backing file.
pub fn check_file(sys: &Sysroot, path: &Path) -> Result<(), TargetError> {
    let refuse = |r: Refusal| TargetError::Refused {
        target: path.to_path_buf(),
        reasons: vec![r],
    };
    match std::fs::metadata(path) {
        Err(_) => {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                return Err(refuse(Refusal::NoDirectory {
                    dir: dir.to_path_buf(),
                }));
            }
            return Ok(());
        }
        Ok(m) if m.file_type().is_block_device() => return Err(refuse(Refusal::BlockDeviceAsFile)),
        Ok(m) if !m.is_file() => {
            return Err(refuse(Refusal::NotBlockDevice {
                kind: "neither a regular file nor a block device",
            }))
        }
        Ok(_) => {}
    }
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    for dev in entries(&sys.path(Path::new("/sys/block"))) {
        if let Some(backing) = sys.read(&format!("/sys/block/{dev}/loop/backing_file")) {
            if Path::new(&backing) == real {
                return Err(refuse(Refusal::LoopBacking {
                    device: format!("/dev/{dev}"),
                }));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/media/my\\040card"), "/media/my card");
        assert_eq!(unescape("/a\\134b"), "/a\\b");
        assert_eq!(unescape("/trailing\\04"), "/trailing\\04");
    }

    #[test]
    fn the_real_root_is_refused_as_a_target_file_through_a_symlink() {
        // Names that resolve to block devices are never file targets.
        let d = tempfile::tempdir().unwrap();
        let link = d.path().join("card.img");
        let Some(disk) = entries(Path::new("/sys/block")).into_iter().find(|n| {
            std::fs::metadata(format!("/dev/{n}")).is_ok_and(|m| m.file_type().is_block_device())
        }) else {
            return; // no block device visible here
        };
        std::os::unix::fs::symlink(format!("/dev/{disk}"), &link).unwrap();
        let err = check_file(&Sysroot::real(), &link).unwrap_err().to_string();
        assert!(err.contains("--device"), "{err}");
    }
}
