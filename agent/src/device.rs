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

    /// The whole disk this system booted from: the one whose MBR disk id
    /// matches the root PARTUUID on the command line.
    pub fn card_path(&self) -> Result<PathBuf, AgentError> {
        let root = self.cmdline.root()?;
        find_disk(Path::new("/sys/block"), Path::new("/dev"), root.disk).ok_or_else(|| {
            AgentError::Device(format!(
                "no disk with id {:08x} (from keel.root) found under /sys/block",
                root.disk
            ))
        })
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

/// Scans whole disks (not partitions) for an MBR with `disk_id`.
pub fn find_disk(sys_block: &Path, dev: &Path, disk_id: u32) -> Option<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir(sys_block)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .collect();
    names.sort();
    for name in names {
        if name.starts_with("loop") || name.starts_with("ram") {
            continue;
        }
        let path = dev.join(&name);
        let mut mbr = [0u8; 512];
        let ok = std::fs::File::open(&path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut mbr))
            .is_ok();
        if ok
            && mbr[510..] == [0x55, 0xaa]
            && u32::from_le_bytes([mbr[440], mbr[441], mbr[442], mbr[443]]) == disk_id
        {
            return Some(path);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_disk_by_signature() {
        let d = tempfile::tempdir().unwrap();
        let (sys, dev) = (d.path().join("sys"), d.path().join("dev"));
        for (name, id) in [("loop0", 7u32), ("vda", 0x1234_5678), ("vdb", 1)] {
            std::fs::create_dir_all(sys.join(name)).unwrap();
            std::fs::create_dir_all(&dev).unwrap();
            let mut mbr = vec![0u8; 512];
            mbr[440..444].copy_from_slice(&id.to_le_bytes());
            mbr[510] = 0x55;
            mbr[511] = 0xaa;
            std::fs::write(dev.join(name), mbr).unwrap();
        }
        assert_eq!(find_disk(&sys, &dev, 0x1234_5678), Some(dev.join("vda")));
        assert_eq!(find_disk(&sys, &dev, 7), None, "loop devices are skipped");
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
