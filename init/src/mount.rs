//! The filesystems PID 1 mounts, and how it tells whether one is mounted.

use std::io;
use std::path::Path;

use crate::sys;

/// One mount PID 1 makes at boot.
#[derive(Debug, Clone, Copy)]
pub struct Mount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: libc::c_ulong,
    pub data: Option<&'static str>,
}

const NOSUID_NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// The kernel's API filesystems, mounted by both stages.
pub const API: [Mount; 3] = [
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    },
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: libc::MS_NOSUID,
        data: Some("mode=0755"),
    },
];

/// Writable scratch space on top of the read-only root.
pub const SCRATCH: [Mount; 2] = [
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: Some("mode=0755"),
    },
    Mount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: Some("mode=1777"),
    },
];

impl Mount {
    /// Mounts unless something is already mounted there. The initramfs
    /// stage moves its /dev into the new root, so the system stage finds
    /// /dev already mounted; EBUSY means the same for filesystems that
    /// refuse a second mount.
    pub fn ensure(&self) -> io::Result<()> {
        let target = Path::new(self.target);
        if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
            if is_mounted(&info, self.target) {
                return Ok(());
            }
        }
        match sys::mount(
            Some(self.source),
            target,
            Some(self.fstype),
            self.flags,
            self.data,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
            other => other,
        }
    }
}

/// True when `target` is a mount point according to /proc/self/mountinfo
/// text (field 5 is the mount point, with spaces etc. octal-escaped).
pub fn is_mounted(mountinfo: &str, target: &str) -> bool {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| unescape(point) == target)
}

/// Undoes the kernel's `\ooo` escaping of space, tab, newline and backslash
/// in mount table paths.
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 0:20 / / ro,relatime - squashfs /dev/vda5 ro,errors=continue
23 22 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs devtmpfs rw,size=10k,mode=755
24 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
25 22 0:22 / /mnt/my\\040disk rw - ext4 /dev/vda7 rw
";

    #[test]
    fn finds_mount_points() {
        assert!(is_mounted(INFO, "/"));
        assert!(is_mounted(INFO, "/dev"));
        assert!(is_mounted(INFO, "/proc"));
        assert!(!is_mounted(INFO, "/sys"));
        assert!(!is_mounted(INFO, "/de"));
        assert!(is_mounted(INFO, "/mnt/my disk"));
        assert!(!is_mounted("", "/"));
        assert!(!is_mounted("garbage\n\n", "/"));
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("a\\"), "a\\");
        assert_eq!(unescape("a\\04"), "a\\04");
        assert_eq!(unescape("a\\999"), "a\\999");
        assert_eq!(unescape("\\777"), "\\777");
    }

    #[test]
    fn scratch_modes() {
        assert_eq!(SCRATCH[1].target, "/tmp");
        assert_eq!(SCRATCH[1].data, Some("mode=1777"));
        assert_eq!(SCRATCH[0].data, Some("mode=0755"));
    }
}
