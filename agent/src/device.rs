//! What the agent knows about the device it runs on: the release file, the
//! kernel command line, the card it booted from and the keys it trusts.

use std::path::{Path, PathBuf};

use update::Slot;

pub const RELEASE: &str = "/etc/keel/release";
pub const KEYS_DIR: &str = "/etc/keel/trusted-keys";

/// `key=value` lines, as in /etc/keel/release.
pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// Value of `key=value` on the kernel command line.
pub fn param<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

pub struct Device {
    pub release: String,
    pub cmdline: String,
}

impl Device {
    pub fn load() -> Result<Device, String> {
        let release = std::fs::read_to_string(RELEASE)
            .map_err(|e| format!("cannot read {RELEASE} ({e}); is this a Keel root filesystem?"))?;
        let cmdline = std::fs::read_to_string("/proc/cmdline")
            .map_err(|e| format!("cannot read /proc/cmdline: {e}"))?;
        Ok(Device { release, cmdline })
    }

    pub fn get(&self, key: &str) -> Result<&str, String> {
        field(&self.release, key).ok_or_else(|| format!("{RELEASE} has no {key}="))
    }

    pub fn booted(&self) -> Result<Slot, String> {
        param(&self.cmdline, "keel.slot")
            .and_then(Slot::from_letter)
            .ok_or_else(|| "the kernel command line has no keel.slot=a|b".to_string())
    }

    pub fn flow(&self) -> Result<Box<dyn update::BootFlow>, String> {
        match self.get("boot_backend")? {
            "tryboot" => Ok(Box::new(update::tryboot::Tryboot)),
            "uboot" => {
                let max_tries = self
                    .get("max_tries")
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(3);
                Ok(Box::new(update::uboot::Uboot { max_tries }))
            }
            other => Err(format!("unknown boot_backend '{other}' in {RELEASE}")),
        }
    }

    /// The whole disk this system booted from: the one whose MBR disk id
    /// matches the root PARTUUID on the command line.
    pub fn card_path(&self) -> Result<PathBuf, String> {
        let uuid = param(&self.cmdline, "keel.root")
            .and_then(|v| v.strip_prefix("PARTUUID="))
            .ok_or_else(|| "the kernel command line has no keel.root=PARTUUID=".to_string())?;
        let id = uuid
            .split('-')
            .next()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or("bad PARTUUID")?;
        find_disk(Path::new("/sys/block"), Path::new("/dev"), id).ok_or_else(|| {
            format!("no disk with id {id:08x} (from keel.root) found under /sys/block")
        })
    }

    pub fn trusted_keys(&self) -> Result<Vec<ed25519_dalek::VerifyingKey>, String> {
        let mut keys = Vec::new();
        let dir =
            std::fs::read_dir(KEYS_DIR).map_err(|e| format!("cannot read {KEYS_DIR}: {e}"))?;
        for e in dir.flatten() {
            let k = bundle::keys::load_verifying_key(&e.path()).map_err(|e| e.to_string())?;
            keys.push(k);
        }
        if keys.is_empty() {
            return Err(format!(
                "{KEYS_DIR} holds no keys; this image cannot accept updates"
            ));
        }
        Ok(keys)
    }
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
        let d = tempfile_dir();
        let (sys, dev) = (d.join("sys"), d.join("dev"));
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
        let _ = std::fs::remove_dir_all(&d);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("keel-agent-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn parses_fields() {
        assert_eq!(param("a keel.slot=b x", "keel.slot"), Some("b"));
        assert_eq!(field("version=1.2\nboard=x\n", "board"), Some("x"));
    }
}
