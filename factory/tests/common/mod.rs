//! What the factory tests share: a small card image laid out like Keel's
//! (MBR, extended partition, ext4 data partition) with a block map, a fake
//! /sys + /proc + /dev tree, and an operator who answers from a script.

#![allow(dead_code)]

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use card_format::mbr::{
    Partition, PartitionTable, EBR_GAP, KIND_EXTENDED_LBA, KIND_FAT32_LBA, KIND_LINUX,
};
use factory::batch::Operator;
use factory::burn::BurnReport;
use factory::copy::Progress;
use factory::Serial;

pub const MIB: u64 = 1 << 20;
pub const PATTERN: u8 = 0xa5;

pub struct TestImage {
    pub path: PathBuf,
    pub bmap: PathBuf,
    pub size: u64,
}

fn part(number: u8, start_lba: u64, sectors: u64, kind: u8) -> Partition {
    Partition {
        number,
        start_lba,
        sectors,
        kind,
        bootable: number == 1,
    }
}

/// An 80 MiB sparse image: data in partitions 1, 2 and 5, partitions 3
/// and 6 empty (unmapped), an ext4 data partition 7, and its block map.
pub fn image(dir: &Path) -> TestImage {
    let path = dir.join("sdcard.img");
    let size = 80 * MIB;
    let mut f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.set_len(size).unwrap();
    let mut parts = vec![
        part(1, 8192, 8192, KIND_FAT32_LBA),
        part(2, 16384, 16384, KIND_FAT32_LBA),
        part(3, 32768, 16384, KIND_FAT32_LBA),
    ];
    let ext_start = 49152;
    let mut next = ext_start;
    let mut logical = Vec::new();
    for (number, sectors) in [(5, 20480), (6, 20480), (7, 40960)] {
        next += EBR_GAP;
        logical.push(part(number, next, sectors, KIND_LINUX));
        next += sectors;
    }
    parts.push(part(4, ext_start, next - ext_start, KIND_EXTENDED_LBA));
    parts.extend(logical);
    let table = PartitionTable {
        disk_id: 0x6b65_656c,
        partitions: parts,
    };
    table.write_to(&mut f).unwrap();
    // Data that is not all one byte, so misplaced blocks show.
    let mut put = |at_mib: u64, len_mib: u64, seed: u8| {
        let bytes: Vec<u8> = (0..len_mib * MIB)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
            .collect();
        f.seek(SeekFrom::Start(at_mib * MIB)).unwrap();
        f.write_all(&bytes).unwrap();
    };
    put(4, 3, 1); // partition 1
    put(8, 2, 2); // partition 2, first half
    put(28, 6, 3); // partition 5
    f.sync_all().unwrap();
    drop(f);
    let data = table.get(7).unwrap();
    image_build::ext4::make_ext4(
        &path,
        data.start_lba * 512,
        data.sectors * 512,
        "keel-data",
        [7; 16],
        [8; 16],
        1_793_491_200,
    )
    .unwrap();
    let bmap = dir.join("sdcard.img.bmap");
    let map = image_build::bmap::generate(&path, 4096).unwrap();
    std::fs::write(&bmap, map.to_xml()).unwrap();
    TestImage { path, bmap, size }
}

/// A file of `size` bytes of [`PATTERN`]: a used card.
pub fn used_card(path: &Path, size: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![PATTERN; MIB as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB);
        f.write_all(&chunk[..n as usize]).unwrap();
        left -= n;
    }
    f.sync_all().unwrap();
}

/// A fake /sys, /proc and /dev: disks and their partitions, mounts, swap,
/// holders. Device numbers are made up; `dev/NAME` is a regular file that
/// stands for the block device.
pub struct FakeSys {
    pub root: PathBuf,
    next_minor: u32,
    mountinfo: String,
    swaps: String,
}

impl FakeSys {
    pub fn new(dir: &Path) -> FakeSys {
        let root = dir.join("sysroot");
        for d in ["sys/class/block", "sys/block", "proc/self", "dev"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let mut s = FakeSys {
            root,
            next_minor: 0,
            mountinfo: String::new(),
            swaps: "Filename\tType\tSize\tUsed\tPriority\n".into(),
        };
        s.write();
        s
    }

    fn write(&mut self) {
        std::fs::write(self.root.join("proc/self/mountinfo"), &self.mountinfo).unwrap();
        std::fs::write(self.root.join("proc/swaps"), &self.swaps).unwrap();
    }

    pub fn sysroot(&self) -> factory::target::Sysroot {
        factory::target::Sysroot::fake(&self.root)
    }

    /// A disk `name` of `size` bytes with `parts` partitions; returns its
    /// device number.
    pub fn disk(&mut self, name: &str, size: u64, removable: bool, parts: u32) -> String {
        let dir = self.root.join("sys/class/block").join(name);
        std::fs::create_dir_all(dir.join("holders")).unwrap();
        std::fs::create_dir_all(dir.join("device")).unwrap();
        let dev = format!("8:{}", self.next_minor);
        self.next_minor += 16;
        std::fs::write(dir.join("dev"), format!("{dev}\n")).unwrap();
        std::fs::write(dir.join("size"), format!("{}\n", size / 512)).unwrap();
        std::fs::write(dir.join("removable"), if removable { "1\n" } else { "0\n" }).unwrap();
        std::fs::write(dir.join("device/vendor"), "Generic \n").unwrap();
        std::fs::write(dir.join("device/model"), "SD/MMC Reader\n").unwrap();
        for n in 1..=parts {
            let p = format!("{name}{n}");
            let pdir = dir.join(&p);
            std::fs::create_dir_all(pdir.join("holders")).unwrap();
            std::fs::write(pdir.join("partition"), format!("{n}\n")).unwrap();
            let minor: u32 = dev.split(':').nth(1).unwrap().parse::<u32>().unwrap() + n;
            std::fs::write(pdir.join("dev"), format!("8:{minor}\n")).unwrap();
            // /sys/class/block/sdb1 links to the partition inside its disk.
            std::os::unix::fs::symlink(&pdir, self.root.join("sys/class/block").join(&p)).unwrap();
        }
        let node = self.root.join("dev").join(name);
        std::fs::File::create(&node)
            .unwrap()
            .set_len(size.min(256 * MIB))
            .unwrap();
        dev
    }

    /// `name` (a disk or partition) mounted at `at`.
    pub fn mount(&mut self, name: &str, at: &str) {
        let dev = std::fs::read_to_string(self.root.join("sys/class/block").join(name).join("dev"))
            .unwrap();
        let n = self.mountinfo.lines().count() + 20;
        self.mountinfo += &format!(
            "{n} 1 {} / {} rw,relatime shared:1 - ext4 /dev/{name} rw\n",
            dev.trim(),
            at.replace(' ', "\\040")
        );
        self.write();
    }

    pub fn swap(&mut self, name: &str) {
        self.swaps += &format!("/dev/{name}\tpartition\t1024\t0\t-2\n");
        self.write();
    }

    /// `holder` (say dm-0) is built on `name`.
    pub fn hold(&mut self, name: &str, holder: &str) {
        let dir = self
            .root
            .join("sys/class/block")
            .join(name)
            .join("holders")
            .join(holder);
        std::fs::create_dir_all(dir).unwrap();
    }

    /// The SD-card type a built-in mmc slot reports.
    pub fn sd_slot(&mut self, name: &str) {
        std::fs::write(
            self.root
                .join("sys/class/block")
                .join(name)
                .join("device/type"),
            "SD\n",
        )
        .unwrap();
    }

    pub fn dev(&self, name: &str) -> PathBuf {
        PathBuf::from("/dev").join(name)
    }
}

/// An operator who says yes, swaps cards when asked, and may stop or
/// crash (panic) at a given card.
#[derive(Default)]
pub struct Scripted {
    pub refuse: bool,
    pub stop_at: Option<usize>,
    /// Panic in the middle of writing this serial's card, like a power cut.
    pub crash_on: Option<String>,
    pub cards: usize,
    pub notes: Vec<String>,
    pub done: Vec<String>,
    pub asked: Vec<String>,
}

impl Operator for Scripted {
    fn confirm(&mut self, what: &str) -> bool {
        self.asked.push(what.to_string());
        !self.refuse
    }
    fn next_card(&mut self, serial: &Serial, n: usize, _total: usize) -> bool {
        self.cards += 1;
        self.stop_at != Some(n) || {
            self.notes.push(format!("stopped before {serial}"));
            false
        }
    }
    fn progress(&mut self, serial: Option<&Serial>, p: Progress) {
        if let (Some(s), Some(c)) = (serial, &self.crash_on) {
            if s.as_str() == c && p.done > 0 && p.done < p.total {
                panic!("power cut while writing {s}");
            }
        }
    }
    fn done(&mut self, serial: &Serial, _: &BurnReport) {
        self.done.push(serial.to_string());
    }
    fn note(&mut self, line: &str) {
        self.notes.push(line.to_string());
    }
}
