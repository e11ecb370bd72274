//! MBR partition tables with an extended partition and a chain of EBRs, so
//! a card can hold more than four partitions and still boot firmware that
//! only reads MBR (the Raspberry Pi boot ROM, many U-Boot builds).

use std::collections::BTreeSet;
use std::io::{Read, Seek, SeekFrom, Write};

use keel_contract::PartUuid;
use thiserror::Error;

pub const SECTOR: u64 = 512;
/// Gap in sectors between each logical partition's EBR and the partition itself (4 MiB, keeps alignment).
pub const EBR_GAP: u64 = 8192;

pub const KIND_FAT32_LBA: u8 = 0x0c;
pub const KIND_EXTENDED_LBA: u8 = 0x0f;
pub const KIND_LINUX: u8 = 0x83;
/// Type written in an EBR's link entry, as fdisk and sfdisk do.
const KIND_EXTENDED_CHS: u8 = 0x05;

const DISK_ID_OFFSET: usize = 440;
const ENTRIES_OFFSET: usize = 446;
const SIGNATURE: [u8; 2] = [0x55, 0xaa];
/// CHS "address beyond CHS range": firmware and Linux use the LBA fields.
const CHS_LBA_ONLY: [u8; 3] = [0xfe, 0xff, 0xff];
/// Bound on the EBR chain so a corrupt chain cannot keep us reading forever.
const MAX_LOGICAL: usize = 128;

fn is_extended(kind: u8) -> bool {
    matches!(kind, 0x05 | 0x0f | 0x85)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub number: u8,
    pub start_lba: u64,
    pub sectors: u64,
    pub kind: u8,
    pub bootable: bool,
}

impl Partition {
    fn end(&self) -> u64 {
        self.start_lba + self.sectors
    }
}

/// Primaries are numbered 1..=4 (the extended one among them), logical
/// partitions 5, 6, … in EBR-chain order, which is how Linux numbers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionTable {
    pub disk_id: u32,
    pub partitions: Vec<Partition>,
}

#[derive(Debug, Error)]
pub enum MbrError {
    #[error("partition {0}: a zero-sized partition cannot be described in MBR; give it a size")]
    ZeroSize(u8),
    #[error("partition {0}: its start or size does not fit MBR's 32-bit sector fields (2 TiB limit); use a smaller layout")]
    TooLarge(u8),
    #[error("partition {0}: starts at sector 0, which holds the MBR itself; start it at 1 or later (normally 8192)")]
    OverlapsMbr(u8),
    #[error("partition number {0} is used twice; every partition needs its own number")]
    DuplicateNumber(u8),
    #[error("partition number {0} is invalid: primaries are 1-4, logical partitions 5 onwards")]
    BadNumber(u8),
    #[error("only one extended partition is allowed, found {0} and {1}")]
    TwoExtended(u8, u8),
    #[error("partition {0} is logical but there is no extended partition to hold it; add one (type 0x0f) as number 4")]
    LogicalWithoutExtended(u8),
    #[error("logical partitions must be numbered 5, 6, … without gaps; found {found} where {expected} was expected")]
    LogicalNumbering { expected: u8, found: u8 },
    #[error("partition {0} is logical but has an extended type; logical partitions hold data, not further extended partitions")]
    NestedExtended(u8),
    #[error(
        "partition {0}: type 0 marks an unused entry; give it a real type (0x0c FAT32, 0x83 Linux)"
    )]
    EmptyKind(u8),
    #[error("partitions {0} and {1} overlap; move one so they do not share sectors")]
    Overlap(u8, u8),
    #[error("logical partition {0} starts before sector {EBR_GAP}, leaving no room for its EBR {EBR_GAP} sectors before it; move it")]
    NoRoomForEbr(u8),
    #[error("logical partition {number} (with its EBR) lies outside extended partition {start}..{end}; grow the extended partition to cover it")]
    OutsideExtended { number: u8, start: u64, end: u64 },
    #[error("extended partition must start at the first logical partition's EBR (sector {expected}), found {found}")]
    ExtendedStart { expected: u64, found: u64 },
    #[error("sector {0} has no 0x55AA signature; this is not an MBR partition table (or the EBR chain points to garbage)")]
    MissingSignature(u64),
    #[error("the EBR chain loops back to sector {0}; the partition table is corrupt")]
    EbrLoop(u64),
    #[error("the EBR chain has more than {MAX_LOGICAL} entries; the partition table is corrupt")]
    TooManyLogical,
    #[error("EBR at sector {ebr} points to sector {target}, outside extended partition {start}..{end}; the partition table is corrupt")]
    EbrOutsideExtended {
        ebr: u64,
        target: u64,
        start: u64,
        end: u64,
    },
    #[error("more than one extended partition in the MBR; Keel only reads a single EBR chain")]
    MultipleExtended,
    #[error("the image ends before sector {0}, which the partition table refers to; the image is truncated or the table is corrupt")]
    Truncated(u64),
    #[error("I/O error on the partition table: {0}")]
    Io(#[from] std::io::Error),
}

/// Fills partition entry `slot` (0-3) of an MBR or EBR sector. Callers
/// have checked that start and sectors fit in 32 bits.
fn put_entry(sector: &mut [u8; 512], slot: usize, p: &Partition) {
    let e = &mut sector[ENTRIES_OFFSET + 16 * slot..ENTRIES_OFFSET + 16 * (slot + 1)];
    e[0] = if p.bootable { 0x80 } else { 0x00 };
    e[1..4].copy_from_slice(&CHS_LBA_ONLY);
    e[4] = p.kind;
    e[5..8].copy_from_slice(&CHS_LBA_ONLY);
    e[8..12].copy_from_slice(&(p.start_lba as u32).to_le_bytes());
    e[12..16].copy_from_slice(&(p.sectors as u32).to_le_bytes());
}

/// Entry `slot` as stored: in an EBR, start is still relative.
fn get_entry(sector: &[u8; 512], slot: usize, number: u8) -> Partition {
    let e = &sector[ENTRIES_OFFSET + 16 * slot..ENTRIES_OFFSET + 16 * (slot + 1)];
    Partition {
        number,
        start_lba: u32::from_le_bytes([e[8], e[9], e[10], e[11]]) as u64,
        sectors: u32::from_le_bytes([e[12], e[13], e[14], e[15]]) as u64,
        kind: e[4],
        bootable: e[0] & 0x80 != 0,
    }
}

fn write_sector<W: Write + Seek>(w: &mut W, lba: u64, sector: &[u8; 512]) -> Result<(), MbrError> {
    w.seek(SeekFrom::Start(lba * SECTOR))?;
    w.write_all(sector)?;
    Ok(())
}

fn read_sector<R: Read + Seek>(r: &mut R, lba: u64) -> Result<[u8; 512], MbrError> {
    let mut sector = [0u8; 512];
    r.seek(SeekFrom::Start(lba * SECTOR))?;
    r.read_exact(&mut sector).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => MbrError::Truncated(lba),
        _ => MbrError::Io(e),
    })?;
    if sector[510..512] != SIGNATURE {
        return Err(MbrError::MissingSignature(lba));
    }
    Ok(sector)
}

fn new_sector() -> [u8; 512] {
    let mut s = [0u8; 512];
    s[510..512].copy_from_slice(&SIGNATURE);
    s
}

/// Why a table read from a card is not safe to write through.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error(
        "the card has no partition {0}; it is not a Keel card, or its partition table is damaged"
    )]
    Missing(u8),
    #[error("partition {number} ends at sector {end}, past the end of the card ({disk} sectors); the partition table is damaged or the image truncated: refusing to write")]
    PastEnd { number: u8, end: u64, disk: u64 },
    #[error("partitions {0} and {1} overlap; the partition table is damaged or forged: refusing to write either")]
    Overlap(u8, u8),
    #[error("partition {0} lies outside the extended partition; the partition table is damaged: refusing to write")]
    OutsideExtended(u8),
}

struct Checked<'a> {
    primaries: Vec<&'a Partition>,
    extended: Option<&'a Partition>,
    logicals: Vec<&'a Partition>,
}

impl PartitionTable {
    pub fn get(&self, number: u8) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.number == number)
    }

    /// Checks a table read from a card before anything is written through
    /// it: every partition in `required` is present, none reaches past the
    /// card's `disk_sectors`, no two data partitions share a sector, and the
    /// logical ones lie inside the extended one. A forged or damaged table
    /// could otherwise make a write to one slot land on the other.
    pub fn check_writable(&self, required: &[u8], disk_sectors: u64) -> Result<(), LayoutError> {
        for n in required {
            if self.get(*n).is_none() {
                return Err(LayoutError::Missing(*n));
            }
        }
        for p in &self.partitions {
            let end = p.start_lba.saturating_add(p.sectors);
            if end > disk_sectors {
                return Err(LayoutError::PastEnd {
                    number: p.number,
                    end,
                    disk: disk_sectors,
                });
            }
        }
        let ext = self.partitions.iter().find(|p| is_extended(p.kind));
        let data: Vec<&Partition> = self
            .partitions
            .iter()
            .filter(|p| !is_extended(p.kind))
            .collect();
        for (i, a) in data.iter().enumerate() {
            for b in &data[i + 1..] {
                if a.start_lba < b.end() && b.start_lba < a.end() {
                    return Err(LayoutError::Overlap(
                        a.number.min(b.number),
                        a.number.max(b.number),
                    ));
                }
            }
            match ext {
                Some(e) if a.number > 4 && (a.start_lba < e.start_lba || a.end() > e.end()) => {
                    return Err(LayoutError::OutsideExtended(a.number));
                }
                Some(e) if a.number <= 4 && a.start_lba < e.end() && e.start_lba < a.end() => {
                    return Err(LayoutError::Overlap(
                        a.number.min(e.number),
                        a.number.max(e.number),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Linux derives an MBR partition's PARTUUID from the disk id and number.
    pub fn partuuid(&self, number: u8) -> PartUuid {
        PartUuid {
            disk: self.disk_id,
            partition: number,
        }
    }

    /// Splits the table into primaries (the extended one among them), the
    /// extended one, and logicals sorted by number, checking everything
    /// MBR cannot express.
    fn validate(&self) -> Result<Checked<'_>, MbrError> {
        let mut seen = BTreeSet::new();
        for p in &self.partitions {
            if p.number == 0 {
                return Err(MbrError::BadNumber(0));
            }
            if !seen.insert(p.number) {
                return Err(MbrError::DuplicateNumber(p.number));
            }
            if p.sectors == 0 {
                return Err(MbrError::ZeroSize(p.number));
            }
            if p.kind == 0 {
                return Err(MbrError::EmptyKind(p.number));
            }
            if p.start_lba == 0 {
                return Err(MbrError::OverlapsMbr(p.number));
            }
            if p.start_lba > u32::MAX as u64 || p.sectors > u32::MAX as u64 {
                return Err(MbrError::TooLarge(p.number));
            }
        }
        let primaries: Vec<&Partition> = self.partitions.iter().filter(|p| p.number <= 4).collect();
        let mut extended: Option<&Partition> = None;
        for p in primaries.iter().filter(|p| is_extended(p.kind)) {
            if let Some(e) = extended {
                return Err(MbrError::TwoExtended(e.number, p.number));
            }
            extended = Some(p);
        }
        let mut logicals: Vec<&Partition> =
            self.partitions.iter().filter(|p| p.number > 4).collect();
        logicals.sort_by_key(|p| p.number);
        for (i, p) in logicals.iter().enumerate() {
            let expected = 5 + i as u8;
            if p.number != expected {
                return Err(MbrError::LogicalNumbering {
                    expected,
                    found: p.number,
                });
            }
            if is_extended(p.kind) {
                return Err(MbrError::NestedExtended(p.number));
            }
        }

        let mut regions: Vec<(u64, u64, u8)> = primaries
            .iter()
            .map(|p| (p.start_lba, p.end(), p.number))
            .collect();
        regions.sort();
        for pair in regions.windows(2) {
            if pair[1].0 < pair[0].1 {
                return Err(MbrError::Overlap(pair[0].2, pair[1].2));
            }
        }
        match extended {
            None => {
                if let Some(first) = logicals.first() {
                    return Err(MbrError::LogicalWithoutExtended(first.number));
                }
            }
            Some(ext) => {
                for p in &logicals {
                    if p.start_lba < EBR_GAP {
                        return Err(MbrError::NoRoomForEbr(p.number));
                    }
                    // The link entry's size covers the EBR gap too.
                    if p.sectors + EBR_GAP > u32::MAX as u64 {
                        return Err(MbrError::TooLarge(p.number));
                    }
                }
                if let Some(first) = logicals.first() {
                    let expected = first.start_lba - EBR_GAP;
                    if ext.start_lba != expected {
                        return Err(MbrError::ExtendedStart {
                            expected,
                            found: ext.start_lba,
                        });
                    }
                }
                for p in &logicals {
                    if p.start_lba - EBR_GAP < ext.start_lba || p.end() > ext.end() {
                        return Err(MbrError::OutsideExtended {
                            number: p.number,
                            start: ext.start_lba,
                            end: ext.end(),
                        });
                    }
                }
                // Linux numbers logicals in chain order, so the chain (and
                // the numbers) must run forward without sharing sectors.
                for pair in logicals.windows(2) {
                    if pair[1].start_lba - EBR_GAP < pair[0].end() {
                        return Err(MbrError::Overlap(pair[0].number, pair[1].number));
                    }
                }
            }
        }
        Ok(Checked {
            primaries,
            extended,
            logicals,
        })
    }

    /// Writes the MBR and, for logical partitions, their EBRs. Only those
    /// sectors are written; the rest of the image is left as it is.
    pub fn write_to<W: Write + Seek>(&self, w: &mut W) -> Result<(), MbrError> {
        let Checked {
            primaries,
            extended,
            logicals,
        } = self.validate()?;
        let mut mbr = new_sector();
        mbr[DISK_ID_OFFSET..DISK_ID_OFFSET + 4].copy_from_slice(&self.disk_id.to_le_bytes());
        for p in &primaries {
            put_entry(&mut mbr, p.number as usize - 1, p);
        }
        write_sector(w, 0, &mbr)?;

        if let Some(ext) = extended {
            for (i, p) in logicals.iter().enumerate() {
                let ebr_lba = p.start_lba - EBR_GAP;
                let mut ebr = new_sector();
                // Entry 1 is relative to this EBR; entry 2 (the link) is
                // relative to the start of the extended partition.
                put_entry(
                    &mut ebr,
                    0,
                    &Partition {
                        start_lba: EBR_GAP,
                        ..(*p).clone()
                    },
                );
                if let Some(next) = logicals.get(i + 1) {
                    let next_ebr = next.start_lba - EBR_GAP;
                    let link = Partition {
                        number: 0,
                        start_lba: next_ebr - ext.start_lba,
                        sectors: next.end() - next_ebr,
                        kind: KIND_EXTENDED_CHS,
                        bootable: false,
                    };
                    put_entry(&mut ebr, 1, &link);
                }
                write_sector(w, ebr_lba, &ebr)?;
            }
            if logicals.is_empty() {
                // An empty but valid chain, so a stale EBR is not picked up.
                write_sector(w, ext.start_lba, &new_sector())?;
            }
        }
        Ok(())
    }

    /// Reads the MBR and follows the EBR chain of its extended partition.
    pub fn read_from<R: Read + Seek>(r: &mut R) -> Result<Self, MbrError> {
        let mbr = read_sector(r, 0)?;
        let d = &mbr[DISK_ID_OFFSET..DISK_ID_OFFSET + 4];
        let disk_id = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        let mut partitions = Vec::new();
        let mut extended = None;
        for slot in 0..4 {
            let p = get_entry(&mbr, slot, slot as u8 + 1);
            if p.kind == 0 {
                continue;
            }
            if is_extended(p.kind) {
                if extended.is_some() {
                    return Err(MbrError::MultipleExtended);
                }
                extended = Some((p.start_lba, p.end()));
            }
            partitions.push(p);
        }

        if let Some((ext_start, ext_end)) = extended {
            let outside = |ebr, target| MbrError::EbrOutsideExtended {
                ebr,
                target,
                start: ext_start,
                end: ext_end,
            };
            let mut visited = BTreeSet::new();
            let mut ebr_lba = ext_start;
            let mut number = 5u8;
            loop {
                if !visited.insert(ebr_lba) {
                    return Err(MbrError::EbrLoop(ebr_lba));
                }
                if visited.len() > MAX_LOGICAL {
                    return Err(MbrError::TooManyLogical);
                }
                let ebr = read_sector(r, ebr_lba)?;
                let mut data = get_entry(&ebr, 0, number);
                if data.kind != 0 {
                    // Starting at 0 would put the partition over its own EBR.
                    let relative = data.start_lba;
                    data.start_lba += ebr_lba;
                    if relative == 0 || data.sectors == 0 || data.end() > ext_end {
                        return Err(outside(ebr_lba, data.start_lba));
                    }
                    partitions.push(data);
                    number += 1;
                }
                let link = get_entry(&ebr, 1, 0);
                if link.kind == 0 {
                    break;
                }
                let next = ext_start + link.start_lba;
                if next >= ext_end {
                    return Err(outside(ebr_lba, next));
                }
                ebr_lba = next;
            }
        }
        Ok(PartitionTable {
            disk_id,
            partitions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use std::process::Command;

    fn part(number: u8, start_lba: u64, sectors: u64, kind: u8, bootable: bool) -> Partition {
        Partition {
            number,
            start_lba,
            sectors,
            kind,
            bootable,
        }
    }

    /// Keel's shape: three FAT primaries, then rootfs A/B and data as logicals.
    fn keel_table() -> PartitionTable {
        let mut parts = vec![
            part(1, 8192, 8192, KIND_FAT32_LBA, true),
            part(2, 16384, 16384, KIND_FAT32_LBA, false),
            part(3, 32768, 16384, KIND_FAT32_LBA, false),
        ];
        let ext_start = 49152;
        let mut next = ext_start;
        let mut logical = Vec::new();
        for (number, sectors) in [(5, 40960), (6, 40960), (7, 20480)] {
            next += EBR_GAP;
            logical.push(part(number, next, sectors, KIND_LINUX, false));
            next += sectors;
        }
        parts.push(part(
            4,
            ext_start,
            next - ext_start,
            KIND_EXTENDED_LBA,
            false,
        ));
        parts.extend(logical);
        PartitionTable {
            disk_id: 0x1234_abcd,
            partitions: parts,
        }
    }

    fn to_bytes(t: &PartitionTable) -> Vec<u8> {
        let mut c = Cursor::new(Vec::new());
        t.write_to(&mut c).unwrap();
        c.into_inner()
    }

    fn sfdisk(args: &[&str], img: &std::path::Path, stdin: Option<&str>) -> String {
        use std::io::Write as _;
        let mut child = Command::new("sfdisk")
            .args(args)
            .arg(img)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("sfdisk not found: install the Debian package fdisk");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "sfdisk {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// (number, start, size, type, bootable), as `sfdisk --dump` lists a partition.
    type Row = (u8, u64, u64, u8, bool);

    fn rows(t: &PartitionTable) -> Vec<Row> {
        t.partitions
            .iter()
            .map(|p| (p.number, p.start_lba, p.sectors, p.kind, p.bootable))
            .collect()
    }

    /// The rows of `sfdisk --dump`, plus the label-id.
    fn parse_dump(dump: &str) -> (String, Vec<Row>) {
        let mut label_id = String::new();
        let mut parts = Vec::new();
        for line in dump.lines() {
            if let Some(id) = line.strip_prefix("label-id: ") {
                label_id = id.to_string();
            }
            let Some((node, fields)) = line.split_once(" : ") else {
                continue;
            };
            let number: u8 = node
                .rsplit(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let (mut start, mut size, mut kind, mut bootable) = (0, 0, 0, false);
            for field in fields.split(',').map(str::trim) {
                match field.split_once('=') {
                    Some(("start", v)) => start = v.trim().parse().unwrap(),
                    Some(("size", v)) => size = v.trim().parse().unwrap(),
                    Some(("type", v)) => kind = u8::from_str_radix(v.trim(), 16).unwrap(),
                    None if field == "bootable" => bootable = true,
                    _ => {}
                }
            }
            parts.push((number, start, size, kind, bootable));
        }
        (label_id, parts)
    }

    #[test]
    fn writable_check_refuses_overlaps_and_overruns() {
        let t = keel_table();
        let disk = t.partitions.iter().map(|p| p.end()).max().unwrap();
        let all = [1, 2, 3, 4, 5, 6, 7];
        assert_eq!(t.check_writable(&all, disk), Ok(()));
        assert!(matches!(
            t.check_writable(&all, disk - 1),
            Err(LayoutError::PastEnd { end, .. }) if end == disk
        ));
        let mut bad = t.clone();
        bad.partitions.retain(|p| p.number != 6);
        assert_eq!(bad.check_writable(&all, disk), Err(LayoutError::Missing(6)));
        // Partition 3 pointed at partition 2's sectors.
        let mut bad = t.clone();
        let two = bad.get(2).unwrap().clone();
        let three = bad.partitions.iter_mut().find(|p| p.number == 3).unwrap();
        three.start_lba = two.start_lba;
        assert_eq!(
            bad.check_writable(&all, disk),
            Err(LayoutError::Overlap(2, 3))
        );
        // Partition 6 grown over partition 5.
        let mut bad = t.clone();
        let five = bad.get(5).unwrap().clone();
        let six = bad.partitions.iter_mut().find(|p| p.number == 6).unwrap();
        six.sectors += six.start_lba - five.start_lba;
        six.start_lba = five.start_lba;
        assert_eq!(
            bad.check_writable(&all, disk),
            Err(LayoutError::Overlap(5, 6))
        );
        // A primary inside the extended partition.
        let mut bad = t.clone();
        let ext = bad.get(4).unwrap().clone();
        let one = bad.partitions.iter_mut().find(|p| p.number == 1).unwrap();
        one.start_lba = ext.start_lba + 1;
        one.sectors = 8;
        assert!(bad.check_writable(&all, disk).is_err());
    }

    #[test]
    fn round_trips() {
        let t = keel_table();
        let bytes = to_bytes(&t);
        assert_eq!(
            PartitionTable::read_from(&mut Cursor::new(&bytes)).unwrap(),
            t
        );
        assert_eq!(t.partuuid(5).to_string(), "1234abcd-05");
        assert_eq!(t.get(7).unwrap().sectors, 20480);

        let primaries_only = PartitionTable {
            disk_id: 7,
            partitions: t.partitions[..3].to_vec(),
        };
        let bytes = to_bytes(&primaries_only);
        assert_eq!(
            PartitionTable::read_from(&mut Cursor::new(&bytes)).unwrap(),
            primaries_only
        );
    }

    #[test]
    fn sfdisk_reads_what_we_write() {
        let t = keel_table();
        let end = t.partitions.iter().map(|p| p.end()).max().unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(end * SECTOR).unwrap();
        t.write_to(&mut file.as_file()).unwrap();

        let (label_id, parts) = parse_dump(&sfdisk(&["--dump"], file.path(), None));
        assert_eq!(label_id, "0x1234abcd");
        assert_eq!(parts, rows(&t));

        let json = sfdisk(&["--json"], file.path(), None);
        assert!(json.contains("\"id\": \"0x1234abcd\""), "{json}");
        assert_eq!(json.matches("\"bootable\": true").count(), 1, "{json}");
        let verify = sfdisk(&["--verify"], file.path(), None);
        assert!(verify.contains("No errors detected"), "{verify}");
    }

    #[test]
    fn reads_what_sfdisk_writes() {
        let script = "label: dos\nlabel-id: 0x12345678\n\
            start=2048, size=4096, type=c, bootable\nstart=6144, size=4096, type=c\n\
            start=10240, size=4096, type=83\nstart=14336, size=40960, type=f\n\
            start=16384, size=8192, type=83\nstart=26624, size=8192, type=83\nstart=36864, size=2048, type=c\n";
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(64 << 20).unwrap();
        sfdisk(&["-q"], file.path(), Some(script));
        let (_, expected) = parse_dump(&sfdisk(&["--dump"], file.path(), None));
        let t = PartitionTable::read_from(&mut file.as_file()).unwrap();
        assert_eq!(t.disk_id, 0x1234_5678);
        assert_eq!(rows(&t), expected);
        assert_eq!(expected.len(), 7);
    }

    #[test]
    fn write_rejects_invalid_layouts() {
        type Edit = fn(&mut Vec<Partition>);
        let cases: [(Edit, &str); 14] = [
            (|p| p[1].start_lba = 9000, "partitions 1 and 2 overlap"),
            (|p| p[5].start_lba -= 1, "partitions 5 and 6 overlap"),
            (|p| p[2].number = 2, "number 2 is used twice"),
            (|p| p[6].number = 8, "found 8 where 7 was expected"),
            (|p| p[0].number = 9, "found 9 where 8 was expected"),
            (|p| p[0].sectors = 0, "partition 1: a zero-sized partition"),
            (
                |p| p[0].kind = 0,
                "partition 1: type 0 marks an unused entry",
            ),
            (|p| p[0].start_lba = 0, "partition 1: starts at sector 0"),
            (
                |p| p[0].sectors = 1 << 32,
                "partition 1: its start or size does not fit",
            ),
            (
                |p| p[4].kind = KIND_EXTENDED_LBA,
                "partition 5 is logical but has an extended type",
            ),
            // A fourth data primary leaves no slot for the extended partition.
            (
                |p| p[3].kind = KIND_LINUX,
                "partition 5 is logical but there is no extended",
            ),
            (|p| p[2].kind = KIND_EXTENDED_LBA, "found 3 and 4"),
            (
                |p| p[3].sectors -= 1,
                "logical partition 7 (with its EBR) lies outside",
            ),
            (
                |p| p[3].start_lba += 1,
                "must start at the first logical partition's EBR",
            ),
        ];
        for (edit, message) in cases {
            let mut t = keel_table();
            edit(&mut t.partitions);
            let err = t.write_to(&mut Cursor::new(Vec::new())).unwrap_err();
            assert!(err.to_string().contains(message), "{err}");
        }
    }

    #[test]
    fn read_rejects_missing_signature() {
        let mut bytes = to_bytes(&keel_table());
        bytes[511] = 0;
        assert!(matches!(
            PartitionTable::read_from(&mut Cursor::new(&bytes)),
            Err(MbrError::MissingSignature(0))
        ));
        assert!(matches!(
            PartitionTable::read_from(&mut Cursor::new(&bytes[..100])),
            Err(MbrError::Truncated(0))
        ));
    }

    #[test]
    fn read_rejects_ebr_loop() {
        let t = keel_table();
        let mut bytes = to_bytes(&t);
        // Point the last EBR's link back at the first EBR.
        let last_ebr = (t.get(7).unwrap().start_lba - EBR_GAP) as usize * 512;
        let sector: &mut [u8; 512] = (&mut bytes[last_ebr..last_ebr + 512]).try_into().unwrap();
        put_entry(sector, 1, &part(0, 0, 100, KIND_EXTENDED_CHS, false));
        let err = PartitionTable::read_from(&mut Cursor::new(&bytes)).unwrap_err();
        assert!(matches!(err, MbrError::EbrLoop(49152)), "{err}");
    }

    #[test]
    fn read_rejects_logical_outside_extended() {
        let t = keel_table();
        let mut bytes = to_bytes(&t);
        let first_ebr = (t.get(5).unwrap().start_lba - EBR_GAP) as usize * 512;
        let sector: &mut [u8; 512] = (&mut bytes[first_ebr..first_ebr + 512]).try_into().unwrap();
        put_entry(sector, 0, &part(5, EBR_GAP, 10_000_000, KIND_LINUX, false));
        let err = PartitionTable::read_from(&mut Cursor::new(&bytes)).unwrap_err();
        assert!(matches!(err, MbrError::EbrOutsideExtended { .. }), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn read_never_panics_on_random_input(bytes in proptest::collection::vec(proptest::num::u8::ANY, 512..65536)) {
            let _ = PartitionTable::read_from(&mut Cursor::new(&bytes));
        }

        /// Every sector signed and LBAs kept small, so random chains are
        /// actually followed (loops, out-of-range links, overlaps).
        #[test]
        fn read_never_panics_on_random_chains(
            entries in proptest::collection::vec(
                (proptest::sample::select(vec![0u8, 0x05, 0x0f, 0x83]), 0u32..160, 0u32..160), 2..256),
        ) {
            let mut bytes = Vec::new();
            for pair in entries.chunks(2) {
                let mut sector = new_sector();
                for (slot, (kind, start, size)) in pair.iter().enumerate() {
                    put_entry(&mut sector, slot, &part(0, *start as u64, *size as u64, *kind, false));
                }
                bytes.extend_from_slice(&sector);
            }
            let _ = PartitionTable::read_from(&mut Cursor::new(&bytes));
        }
    }
}
