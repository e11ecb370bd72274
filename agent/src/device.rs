//! What the agent knows about the device it runs on: the release file, the
//! kernel command line, the card it booted from and the keys it trusts —
//! all read through the contract's one parser for each.

use std::path::{Path, PathBuf};

use keel_contract::{paths, BootBackend, KernelCmdline, Release, Slot};
use update::BootFlow;

use crate::AgentError;

/// The release file and the kernel command line are small; anything
/// larger is not what the image builder wrote.
const MAX_TEXT: u64 = 64 * 1024;

pub struct Device {
    pub release: Release,
    pub cmdline: KernelCmdline,
}

fn read_text(path: &str) -> Result<String, AgentError> {
    durable::read_to_string(Path::new(path), MAX_TEXT)
        .map_err(AgentError::io(format!("cannot read {path}")))?
        .ok_or_else(|| {
            AgentError::Device(format!(
                "{path} does not exist; is this a Keel root filesystem?"
            ))
        })
}

impl Device {
    pub fn load() -> Result<Device, AgentError> {
        let release = Release::parse(&read_text(paths::RELEASE)?);
        let cmdline = std::fs::read_to_string("/proc/cmdline")
            .map_err(AgentError::io("cannot read /proc/cmdline"))?;
        Ok(Device {
            release,
            cmdline: KernelCmdline::parse(&cmdline),
        })
    }

    /// The slot the bootloader started (the same answer init gives).
    pub fn booted(&self) -> Result<Slot, AgentError> {
        Ok(self.cmdline.slot()?)
    }

    pub fn board(&self) -> Result<&str, AgentError> {
        Ok(self.release.board()?)
    }

    pub fn version(&self) -> Result<&str, AgentError> {
        Ok(self.release.version()?)
    }

    /// The boot backend the image was built for.
    pub fn flow(&self) -> Result<Box<dyn BootFlow>, AgentError> {
        Ok(match self.release.boot_backend()? {
            BootBackend::Uboot => Box::new(update::uboot::Uboot {
                max_tries: self.release.max_tries()?,
            }),
        })
    }

    /// The whole disk the running root filesystem was mounted from — not
    /// merely a disk with the same MBR id (the same image can be on an SD
    /// card and the eMMC at once) — checked against `keel.root`.
    pub fn card_path(&self) -> Result<PathBuf, AgentError> {
        let root = self.cmdline.root()?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(AgentError::io("cannot read /proc/self/mountinfo"))?;
        root_disk(
            &mountinfo,
            Path::new("/sys/dev/block"),
            Path::new("/dev"),
            root,
        )
    }

    pub fn trusted_keys(&self) -> Result<Vec<ed25519_dalek::VerifyingKey>, AgentError> {
        trusted_keys(Path::new(paths::TRUSTED_KEYS_DIR))
    }
}

/// Every key file in `dir`; a file that is not a key is an error naming it.
pub fn trusted_keys(dir: &Path) -> Result<Vec<ed25519_dalek::VerifyingKey>, AgentError> {
    let entries =
        std::fs::read_dir(dir).map_err(AgentError::io(format!("cannot read {}", dir.display())))?;
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    let mut keys = Vec::new();
    for p in paths {
        keys.push(
            bundle::keys::load_verifying_key(&p).map_err(|e| AgentError::Device(e.to_string()))?,
        );
    }
    if keys.is_empty() {
        return Err(AgentError::Device(format!(
            "{} holds no keys; this image cannot accept updates",
            dir.display()
        )));
    }
    Ok(keys)
}

/// The disk holding the partition mounted at `/` (the last `/` in
/// `mountinfo`, the root after switch_root): its device number leads,
/// through `sys_dev_block/MAJ:MIN`, to the partition's sysfs directory,
/// whose parent is the disk. The disk must carry `want`'s MBR id and the
/// partition `want`'s number, or the agent does not know which card it
/// runs from and refuses to go on.
pub fn root_disk(
    mountinfo: &str,
    sys_dev_block: &Path,
    dev: &Path,
    want: keel_contract::PartUuid,
) -> Result<PathBuf, AgentError> {
    let unsure = |why: String| {
        AgentError::Device(format!(
            "cannot tell which disk the running system came from ({why}); not touching any card"
        ))
    };
    let number = mountinfo
        .lines()
        .rev()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let devno = f.nth(2)?;
            let mount_point = f.nth(1)?;
            (mount_point == "/").then_some(devno)
        })
        .ok_or_else(|| unsure("no / in /proc/self/mountinfo".into()))?;
    let part_dir = std::fs::canonicalize(sys_dev_block.join(number))
        .map_err(|e| unsure(format!("{}: {e}", sys_dev_block.join(number).display())))?;
    let partition: u32 = std::fs::read_to_string(part_dir.join("partition"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(|| unsure(format!("{} is not a partition", part_dir.display())))?;
    let disk_name = part_dir
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .ok_or_else(|| unsure(format!("no disk above {}", part_dir.display())))?;
    let disk = dev.join(disk_name);
    let id = mbr_id(&disk).ok_or_else(|| unsure(format!("{} has no MBR", disk.display())))?;
    if id != want.disk || partition != u32::from(want.partition) {
        return Err(unsure(format!(
            "/ is partition {partition} of {} (disk id {id:08x}), but keel.root says {}",
            disk.display(),
            want.spec()
        )));
    }
    Ok(disk)
}

fn mbr_id(disk: &Path) -> Option<u32> {
    let mut mbr = [0u8; 512];
    std::fs::File::open(disk)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut mbr))
        .ok()?;
    (mbr[510..] == [0x55, 0xaa])
        .then(|| u32::from_le_bytes([mbr[440], mbr[441], mbr[442], mbr[443]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two disks with the same image: the one the root came from is chosen.
    #[test]
    fn the_card_is_the_disk_the_root_was_mounted_from() {
        let d = tempfile::tempdir().unwrap();
        let (devices, dev_block, dev) = (
            d.path().join("devices"),
            d.path().join("dev-block"),
            d.path().join("dev"),
        );
        std::fs::create_dir_all(&dev_block).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        let mut mbr = vec![0u8; 512];
        mbr[440..444].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        for (disk, major) in [("mmcblk0", 179), ("mmcblk1", 180)] {
            let part = devices.join(disk).join(format!("{disk}p5"));
            std::fs::create_dir_all(&part).unwrap();
            std::fs::write(part.join("partition"), "5\n").unwrap();
            std::os::unix::fs::symlink(&part, dev_block.join(format!("{major}:5"))).unwrap();
            std::fs::write(dev.join(disk), &mbr).unwrap();
        }
        let want = keel_contract::PartUuid {
            disk: 0x1234_5678,
            partition: 5,
        };
        let info =
            "22 1 0:21 / /proc rw - proc proc rw\n30 1 180:5 / / ro - squashfs /dev/mmcblk1p5 ro\n";
        assert_eq!(
            root_disk(info, &dev_block, &dev, want).unwrap(),
            dev.join("mmcblk1")
        );
        // keel.root naming another partition: unsure, refused.
        let other = keel_contract::PartUuid {
            disk: 0x1234_5678,
            partition: 6,
        };
        assert!(root_disk(info, &dev_block, &dev, other)
            .unwrap_err()
            .to_string()
            .contains("not touching"));
        assert!(root_disk("", &dev_block, &dev, want).is_err());
    }

    /// init and the agent read the same slot from any command line.
    #[test]
    fn reads_the_slot_the_way_init_does() {
        let dev = Device {
            release: Release::default(),
            cmdline: KernelCmdline::parse("keel.slot=a console=x keel.slot=\"B\""),
        };
        assert_eq!(dev.booted().unwrap(), Slot::B);
    }

    #[test]
    fn a_bad_key_file_is_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("release.pub"), "not a key\n").unwrap();
        let e = trusted_keys(d.path()).unwrap_err().to_string();
        assert!(e.contains("release.pub"), "{e}");
    }
}
