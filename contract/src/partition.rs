//! The card's partitions and what each is for (docs/layout.md). One layout
//! for every board: the numbers are Linux's and U-Boot's (logical
//! partitions count from 5).

/// Boot selector: FAT, active; what the ROM or firmware reads first.
pub const SELECTOR: u8 = 1;
/// Slot A's boot partition (FAT).
pub const BOOT_A: u8 = 2;
/// Slot B's boot partition (FAT).
pub const BOOT_B: u8 = 3;
/// The extended partition holding 5–7.
pub const EXTENDED: u8 = 4;
/// Slot A's root filesystem (squashfs).
pub const ROOTFS_A: u8 = 5;
/// Slot B's root filesystem.
pub const ROOTFS_B: u8 = 6;
/// The writable data partition (ext4), mounted at /data.
pub const DATA: u8 = 7;

/// What a partition is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Selector,
    Boot(crate::Slot),
    Extended,
    Rootfs(crate::Slot),
    Data,
}

impl Role {
    pub fn of(number: u8) -> Option<Role> {
        use crate::Slot::{A, B};
        Some(match number {
            SELECTOR => Role::Selector,
            BOOT_A => Role::Boot(A),
            BOOT_B => Role::Boot(B),
            EXTENDED => Role::Extended,
            ROOTFS_A => Role::Rootfs(A),
            ROOTFS_B => Role::Rootfs(B),
            DATA => Role::Data,
            _ => return None,
        })
    }

    pub fn describe(self) -> String {
        match self {
            Role::Selector => "boot selector".into(),
            Role::Boot(s) => format!("boot {}", s.as_str().to_uppercase()),
            Role::Extended => "extended".into(),
            Role::Rootfs(s) => format!("rootfs {}", s.as_str().to_uppercase()),
            Role::Data => "data".into(),
        }
    }
}

/// Every partition number a Keel card has, in table order.
pub const ALL: [u8; 7] = [SELECTOR, BOOT_A, BOOT_B, EXTENDED, ROOTFS_A, ROOTFS_B, DATA];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        assert_eq!(Role::of(6), Some(Role::Rootfs(crate::Slot::B)));
        assert_eq!(Role::of(8), None);
        assert_eq!(Role::of(2).unwrap().describe(), "boot A");
        for n in ALL {
            assert!(Role::of(n).is_some());
        }
    }
}
