//! A small Keel card on an image file, for the applier's tests: the full
//! partition layout, slot A filled and marked complete in the boot state.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use card_format::bootstate::{Record, COPIES};
use card_format::mbr::{Partition, PartitionTable, KIND_EXTENDED_LBA, KIND_FAT32_LBA, KIND_LINUX};
use update::Card;

pub const MIB: u64 = 2048; // sectors
pub const SLOT_BYTES: usize = 4 << 20;
pub const CARD_SECTORS: u64 = 76 * MIB;

pub fn table() -> PartitionTable {
    let p = |number, start: u64, size: u64, kind, bootable| Partition {
        number,
        start_lba: start * MIB,
        sectors: size * MIB,
        kind,
        bootable,
    };
    PartitionTable {
        disk_id: 0x1234_5678,
        partitions: vec![
            p(1, 4, 40, KIND_FAT32_LBA, true),
            p(2, 44, 4, KIND_FAT32_LBA, false),
            p(3, 48, 4, KIND_FAT32_LBA, false),
            p(4, 52, 24, KIND_EXTENDED_LBA, false),
            p(5, 56, 4, KIND_LINUX, false),
            p(6, 64, 4, KIND_LINUX, false),
            p(7, 72, 4, KIND_LINUX, false),
        ],
    }
}

/// What slot A's partitions hold on a fresh card.
pub const BOOT_A_BYTE: u8 = 0xaa;
pub const ROOTFS_A_BYTE: u8 = 0x55;

/// A fresh card at `dir/card.img`: slot A written and complete, B empty.
pub fn make_card(dir: &Path) -> PathBuf {
    let path = dir.join("card.img");
    let mut f = std::fs::File::create(&path).unwrap();
    f.set_len(CARD_SECTORS * 512).unwrap();
    table().write_to(&mut f).unwrap();
    for off in COPIES {
        use std::io::{Seek, SeekFrom, Write};
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(&Record::initial("0.1.0@t").encode().unwrap())
            .unwrap();
    }
    drop(f);
    let mut card = Card::open(&path).unwrap();
    card.write_at(2, 0, &vec![BOOT_A_BYTE; SLOT_BYTES]).unwrap();
    card.write_at(5, 0, &vec![ROOTFS_A_BYTE; SLOT_BYTES])
        .unwrap();
    path
}

pub fn read_part(card: &Path, part: u8, len: usize) -> Vec<u8> {
    let mut c = Card::open(card).unwrap();
    let mut buf = vec![0; len];
    c.read_at(part, 0, &mut buf).unwrap();
    buf
}

/// Slot A's partitions are exactly as on a fresh card.
pub fn slot_a_untouched(card: &Path) -> bool {
    read_part(card, 2, SLOT_BYTES) == vec![BOOT_A_BYTE; SLOT_BYTES]
        && read_part(card, 5, SLOT_BYTES) == vec![ROOTFS_A_BYTE; SLOT_BYTES]
}
