//! The card layout, derived from a board config: where every partition
//! starts, how big it is, and the ids that tie the kernel command line to it.

use sha2::{Digest, Sha256};

use card_format::mbr::{
    Partition, PartitionTable, EBR_GAP, KIND_EXTENDED_LBA, KIND_FAT32_LBA, KIND_LINUX, SECTOR,
};
use keel_contract::partition::{BOOT_A, BOOT_B, DATA, EXTENDED, ROOTFS_A, ROOTFS_B, SELECTOR};
use keel_contract::{cmdline, Slot};

use crate::board::BoardConfig;

/// Every partition starts on this boundary (sectors): 4 MiB suits SD-card
/// erase blocks and keeps the EBR gap aligned too.
pub const ALIGN: u64 = 8192;
const MIB: u64 = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub table: PartitionTable,
    /// Total image size in bytes (end of the data partition).
    pub image_size: u64,
}

impl Layout {
    pub fn for_board(cfg: &BoardConfig) -> Self {
        let p = &cfg.partitions;
        let sectors = |mib: u64| mib * MIB / SECTOR;
        let mut parts = Vec::new();
        let mut next = ALIGN;
        for (number, mib, bootable) in [
            (SELECTOR, p.boot_selector_mib, true),
            (BOOT_A, p.boot_slot_mib, false),
            (BOOT_B, p.boot_slot_mib, false),
        ] {
            parts.push(Partition {
                number,
                start_lba: next,
                sectors: sectors(mib),
                kind: KIND_FAT32_LBA,
                bootable,
            });
            next += sectors(mib);
        }
        let ext_start = next;
        let mut logical = Vec::new();
        for (number, mib) in [
            (ROOTFS_A, p.rootfs_slot_mib),
            (ROOTFS_B, p.rootfs_slot_mib),
            (DATA, p.data_mib),
        ] {
            next += EBR_GAP;
            logical.push(Partition {
                number,
                start_lba: next,
                sectors: sectors(mib),
                kind: KIND_LINUX,
                bootable: false,
            });
            next += sectors(mib);
        }
        parts.push(Partition {
            number: EXTENDED,
            start_lba: ext_start,
            sectors: next - ext_start,
            kind: KIND_EXTENDED_LBA,
            bootable: false,
        });
        parts.extend(logical);
        Layout {
            table: PartitionTable {
                disk_id: disk_id(&cfg.name),
                partitions: parts,
            },
            image_size: next * SECTOR,
        }
    }

    pub fn partition(&self, number: u8) -> &Partition {
        self.table
            .get(number)
            .expect("layout always has partitions 1-7")
    }

    /// Byte offset and length of a partition.
    pub fn span(&self, number: u8) -> (u64, u64) {
        let p = self.partition(number);
        (p.start_lba * SECTOR, p.sectors * SECTOR)
    }

    /// The kernel command line for a slot: init finds its root and data
    /// partitions by PARTUUID, so the same line works on mmcblk and virtio.
    pub fn cmdline(&self, cfg: &BoardConfig, slot: Slot) -> String {
        cmdline::render(
            &cfg.console,
            slot,
            self.table.partuuid(slot.rootfs_partition()),
            self.table.partuuid(DATA),
            &cfg.kernel.cmdline_extra,
        )
    }
}

/// Stable per-board id derived from the inputs: every card of a board shares
/// its disk id, so an update's command line (PARTUUIDs) fits every device.
pub fn disk_id(board: &str) -> u32 {
    let d = derive(board, "disk-id");
    u32::from_le_bytes([d[0], d[1], d[2], d[3]])
}

/// 32 bytes derived from the board name and a purpose, for ids and seeds
/// that must be the same on every build.
pub fn derive(board: &str, purpose: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"keel\0");
    h.update(board.as_bytes());
    h.update(b"\0");
    h.update(purpose.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::BoardConfig;
    use std::path::Path;

    fn cfg() -> BoardConfig {
        BoardConfig::parse(
            r#"
name = "t"
description = "t"
arch = "aarch64"
boot_backend = "uboot"
console = "ttyAMA0,115200"
[kernel]
package = "k"
initramfs_modules = ["virtio_blk"]
[partitions]
boot_selector_mib = 40
boot_slot_mib = 64
rootfs_slot_mib = 128
data_mib = 64
[uboot]
"#,
            Path::new("t.toml"),
        )
        .unwrap()
    }

    #[test]
    fn partitions_are_aligned_and_ordered() {
        let l = Layout::for_board(&cfg());
        let mut end = 0;
        for p in &l.table.partitions {
            assert_eq!(
                p.start_lba % ALIGN,
                0,
                "partition {} not 4 MiB aligned",
                p.number
            );
            if p.number != 4 {
                assert!(p.start_lba >= end, "partition {} overlaps", p.number);
                end = p.start_lba + p.sectors;
            }
        }
        assert_eq!(l.span(ROOTFS_A).1, l.span(ROOTFS_B).1);
        assert_eq!(l.image_size, end * SECTOR);
        assert!(l.partition(1).bootable);
        let ext = l.partition(4);
        assert_eq!(ext.start_lba + EBR_GAP, l.partition(5).start_lba);
        assert_eq!(ext.start_lba + ext.sectors, end);
    }

    #[test]
    fn cmdline_names_slot_partitions() {
        let l = Layout::for_board(&cfg());
        let id = format!("{:08x}", disk_id("t"));
        let a = l.cmdline(&cfg(), Slot::A);
        assert!(a.contains(&format!("keel.root=PARTUUID={id}-05")), "{a}");
        assert!(l
            .cmdline(&cfg(), Slot::B)
            .contains(&format!("keel.root=PARTUUID={id}-06")));
        assert!(a.contains(&format!("keel.data=PARTUUID={id}-07")));
    }

    #[test]
    fn ids_are_stable_and_board_specific() {
        assert_eq!(disk_id("rpi4"), disk_id("rpi4"));
        assert_ne!(disk_id("rpi4"), disk_id("bbb"));
    }
}
