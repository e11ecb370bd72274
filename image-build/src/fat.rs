//! FAT boot partitions (the boot selector and the boot slots): formatted and
//! filled with `fatfs` through a slice of the image, byte-identical for the
//! same inputs.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Seek, SeekFrom, Write};

use fatfs::{
    Date, DateTime, FatType, FileSystem, FormatVolumeOptions, FsOptions, Time, TimeProvider,
};

/// One file to put on a boot partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatFile {
    /// '/'-separated path ("overlays/x.dtbo"); parent directories are created.
    pub path: String,
    pub data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("the boot files need {needed} bytes but the FAT partition has {available} bytes free; raise the partition size in the board config")]
    Full { needed: u64, available: u64 },
    #[error(
        "FAT volume label {0:?} is not usable; use at most 11 ASCII letters, digits, '-' or '_'"
    )]
    Label(String),
    #[error("boot file path {path:?} is not usable on FAT ({why}); fix the destination name in the board config")]
    BadPath { path: String, why: &'static str },
    #[error("two boot files are both named {0:?} (FAT ignores case); give one of them another destination name in the board config")]
    Duplicate(String),
    #[error("a {0}-byte partition cannot hold a FAT filesystem (it takes 2 MiB to 2 TiB); change the partition size in the board config")]
    Size(u64),
    #[error("{0} is not on the FAT partition")]
    NotFound(String),
    #[error("the partition does not hold a readable FAT filesystem ({0}); rebuild the image")]
    NotFat(io::Error),
    #[error("FAT I/O failed while {what}: {source}")]
    Io { what: String, source: io::Error },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> FatError {
    let what = what.into();
    move |source| FatError::Io { what, source }
}

/// Largest cluster tried first: fewer FAT entries to walk, less slack than
/// the 8-32 KiB clusters mkfs.fat picks for big volumes.
const CLUSTER_SIZES: [u32; 4] = [4096, 2048, 1024, 512];
const SECTOR: u64 = 512;
const DIR_ENTRY: u64 = 32;
/// Characters per long-file-name directory entry.
const LFN_CHARS: u64 = 13;

thread_local! {
    /// The time stamped on every entry created on this thread. `fatfs` 0.3
    /// only accepts a `&'static` time provider, so the per-build timestamp
    /// reaches it through here rather than through a leaked allocation.
    static PINNED_TIME: Cell<u64> = const { Cell::new(0) };
}

/// Never reads the wall clock (the default provider does, via chrono).
#[derive(Debug)]
struct PinnedClock;

static PINNED_CLOCK: PinnedClock = PinnedClock;

impl TimeProvider for PinnedClock {
    fn get_current_date(&self) -> Date {
        self.get_current_date_time().date
    }

    fn get_current_date_time(&self) -> DateTime {
        dos_date_time(PINNED_TIME.with(Cell::get))
    }
}

/// FAT stores local time without a zone; we store UTC, as SOURCE_DATE_EPOCH
/// is defined in UTC. DOS dates cover 1980..=2107, so clamp to that range.
fn dos_date_time(unix: u64) -> DateTime {
    const MIN: u64 = 315_532_800; // 1980-01-01T00:00:00Z
    const MAX: u64 = 4_354_819_198; // 2107-12-31T23:59:58Z
    let t = unix.clamp(MIN, MAX);
    let (days, secs) = (t / 86_400, t % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    DateTime {
        date: Date {
            year: year as u16,
            month: month as u16,
            day: day as u16,
        },
        // DOS times have 2-second resolution in the modified field; the
        // created field has more, so keep seconds even for both to agree.
        time: Time {
            hour: (secs / 3600) as u16,
            min: (secs / 60 % 60) as u16,
            sec: ((secs % 60) & !1) as u16,
            millis: 0,
        },
    }
}

fn mount_options() -> FsOptions {
    FsOptions::new()
        .time_provider(&PINNED_CLOCK)
        .update_accessed_date(false)
}

fn mount<T: Read + Write + Seek>(mut part: T) -> Result<FileSystem<T>, FatError> {
    // fatfs expects the stream at the start of the volume.
    part.seek(SeekFrom::Start(0))
        .map_err(io_err("seeking to the start of the partition"))?;
    FileSystem::new(part, mount_options()).map_err(FatError::NotFat)
}

fn label_bytes(label: &str) -> Result<[u8; 11], FatError> {
    let ok = !label.is_empty()
        && label.len() <= 11
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(FatError::Label(label.to_string()));
    }
    let mut out = [b' '; 11];
    for (o, b) in out.iter_mut().zip(label.bytes()) {
        *o = b.to_ascii_uppercase();
    }
    Ok(out)
}

/// Splits a destination path into components, rejecting what FAT cannot hold.
fn components(path: &str) -> Result<Vec<&str>, FatError> {
    let bad = |why| FatError::BadPath {
        path: path.to_string(),
        why,
    };
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    for p in &parts {
        if p.is_empty() || *p == "." || *p == ".." {
            return Err(bad("empty, '.' or '..' component"));
        }
        if p.encode_utf16().count() > 255 {
            return Err(bad("a name longer than 255 characters"));
        }
        if p.chars().any(|c| c < ' ' || "\\:*?\"<>|".contains(c)) {
            return Err(bad("a character FAT forbids"));
        }
    }
    Ok(parts)
}

/// Directory entries a name takes: fatfs 0.3 writes long-name entries for
/// every name, even "." and "..", plus the short entry.
fn entries_for(name: &str) -> u64 {
    1 + (name.encode_utf16().count() as u64).div_ceil(LFN_CHARS)
}

/// Bytes of clusters the files and their directories will occupy.
fn bytes_needed(files: &[(Vec<&str>, &FatFile)], cluster: u64, fat32: bool) -> u64 {
    let round = |n: u64| n.div_ceil(cluster) * cluster;
    // Directory path -> directory entries it will hold.
    let mut dirs: BTreeMap<String, u64> = BTreeMap::new();
    // The root holds the volume label entry; subdirectories "." and "..".
    dirs.insert(String::new(), 1);
    let mut data = 0;
    for (parts, file) in files {
        data += round(file.data.len() as u64);
        let mut parent = String::new();
        for (i, name) in parts.iter().enumerate() {
            let path = if parent.is_empty() {
                name.to_string()
            } else {
                format!("{parent}/{name}")
            };
            let is_dir = i + 1 < parts.len();
            if !is_dir || !dirs.contains_key(&path) {
                *dirs.entry(parent.clone()).or_default() += entries_for(name);
            }
            if is_dir && !dirs.contains_key(&path) {
                dirs.insert(path.clone(), entries_for(".") + entries_for(".."));
            }
            parent = path;
        }
    }
    // A FAT16 root directory lives in its own fixed region, not in clusters.
    let dir_bytes: u64 = dirs
        .iter()
        .filter(|(p, _)| fat32 || !p.is_empty())
        .map(|(_, entries)| round(entries * DIR_ENTRY).max(cluster))
        .sum();
    data + dir_bytes
}

/// Formats as FAT32 with the largest cluster size that still gives FAT32 its
/// minimum cluster count, else FAT16.
fn format<T: Read + Write + Seek>(
    part: &mut T,
    sectors: u32,
    label: [u8; 11],
    volume_id: u32,
) -> Result<(), FatError> {
    let base = FormatVolumeOptions::new()
        .total_sectors(sectors)
        .volume_id(volume_id)
        .volume_label(label);
    // fatfs 0.3.6 uses `fat_type` only to pick a default cluster size; the
    // type it writes is the first of FAT32, FAT16, FAT12 whose cluster
    // count the geometry meets. So rehearse each cluster size and keep the
    // first that really comes out FAT32.
    let fat32 = CLUSTER_SIZES
        .iter()
        .map(|&c| base.clone().fat_type(FatType::Fat32).bytes_per_cluster(c))
        .find(|opts| Rehearsal::comes_out_fat32(sectors, opts.clone()));
    let opts = fat32.unwrap_or_else(|| base.fat_type(FatType::Fat16));
    part.seek(SeekFrom::Start(0))
        .map_err(io_err("seeking to the start of the partition"))?;
    fatfs::format_volume(&mut *part, opts).map_err(|e| match e.kind() {
        // fatfs's "no FAT type fits this size".
        io::ErrorKind::Other => FatError::Size(u64::from(sectors) * SECTOR),
        _ => FatError::Io {
            what: "formatting".into(),
            source: e,
        },
    })
}

/// A stand-in disk for a dry-run format: keeps the boot sector, discards
/// every other write and reads zeros, so trying a geometry costs no I/O.
struct Rehearsal {
    pos: u64,
    boot: [u8; 512],
}

impl Rehearsal {
    fn comes_out_fat32(sectors: u32, opts: FormatVolumeOptions) -> bool {
        let mut disk = Self {
            pos: 0,
            boot: [0; 512],
        };
        // FAT32 boot sectors leave the 16-bit sectors-per-FAT field zero.
        fatfs::format_volume(&mut disk, opts).is_ok() && sectors > 0 && disk.boot[22..24] == [0, 0]
    }
}

impl Read for Rehearsal {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        buf.fill(0);
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
}

impl Write for Rehearsal {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(room) = usize::try_from(self.pos)
            .ok()
            .and_then(|at| self.boot.get_mut(at..))
        {
            let n = room.len().min(buf.len());
            room[..n].copy_from_slice(&buf[..n]);
        }
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for Rehearsal {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(n) => n,
            SeekFrom::Current(d) => self.pos.saturating_add_signed(d),
            // Only used when total_sectors is not given; it always is.
            SeekFrom::End(_) => return Err(io::Error::other("a rehearsal disk has no end")),
        };
        Ok(self.pos)
    }
}

/// Zeroes `[0, len)` where it is not zero already: fatfs does a quick format
/// and leaves stale bytes in cluster slack, which would make rebuilding into
/// a used image differ. Zero regions are only read, so sparse images stay
/// sparse.
fn scrub<T: Read + Write + Seek>(part: &mut T, len: u64) -> io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK as usize];
    for pos in (0..len).step_by(CHUNK as usize) {
        let chunk = &mut buf[..(len - pos).min(CHUNK) as usize];
        part.seek(SeekFrom::Start(pos))?;
        part.read_exact(chunk)?;
        if chunk.iter().any(|&b| b != 0) {
            chunk.fill(0);
            part.seek(SeekFrom::Start(pos))?;
            part.write_all(chunk)?;
        }
    }
    Ok(())
}

/// Formats `part` (the first `size_bytes` of it) and writes `files`, every
/// timestamp set to `timestamp` (unix seconds, stored as UTC).
pub fn format_and_fill<T: Read + Write + Seek>(
    mut part: T,
    size_bytes: u64,
    label: &str,
    volume_id: u32,
    files: &[FatFile],
    timestamp: u64,
) -> Result<(), FatError> {
    let label = label_bytes(label)?;
    let mut sorted: Vec<(Vec<&str>, &FatFile)> = files
        .iter()
        .map(|f| Ok((components(&f.path)?, f)))
        .collect::<Result<_, FatError>>()?;
    // Sorted, so the bytes do not depend on the order the caller listed files.
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut seen = BTreeSet::new();
    for (parts, _) in &sorted {
        if !seen.insert(parts.join("/").to_lowercase()) {
            return Err(FatError::Duplicate(parts.join("/")));
        }
    }
    let sectors = u32::try_from(size_bytes / SECTOR).map_err(|_| FatError::Size(size_bytes))?;

    PINNED_TIME.with(|t| t.set(timestamp));
    scrub(&mut part, u64::from(sectors) * SECTOR).map_err(io_err("clearing the partition"))?;
    format(&mut part, sectors, label, volume_id)?;

    let fs = mount(&mut part)?;
    let cluster = u64::from(fs.cluster_size());
    let fat32 = fs.fat_type() == FatType::Fat32;
    let stats = fs.stats().map_err(io_err("reading free space"))?;
    let available = u64::from(stats.free_clusters()) * cluster;
    let needed = bytes_needed(&sorted, cluster, fat32);
    if needed > available {
        return Err(FatError::Full { needed, available });
    }
    write_files(&fs, &sorted, needed, available)?;
    fs.unmount().map_err(io_err("closing the filesystem"))?;
    fix_dot_entries(&mut part).map_err(io_err("tidying directory entries"))?;
    part.flush().map_err(io_err("flushing the partition"))
}

fn write_files<T: Read + Write + Seek>(
    fs: &FileSystem<T>,
    sorted: &[(Vec<&str>, &FatFile)],
    needed: u64,
    available: u64,
) -> Result<(), FatError> {
    // The estimate should catch a full partition first; this keeps the error
    // actionable if it is ever off.
    let full = |e: io::Error, what: String| {
        if e.to_string().contains("No space left") {
            FatError::Full { needed, available }
        } else {
            FatError::Io { what, source: e }
        }
    };
    for (parts, file) in sorted {
        let (name, dirs) = parts.split_last().ok_or_else(|| FatError::BadPath {
            path: file.path.clone(),
            why: "empty",
        })?;
        let mut dir = fs.root_dir();
        for d in dirs {
            dir = dir
                .create_dir(d)
                .map_err(|e| full(e, format!("creating directory {d}")))?;
        }
        let mut f = dir
            .create_file(name)
            .map_err(|e| full(e, format!("creating {}", file.path)))?;
        f.write_all(&file.data)
            .map_err(|e| full(e, format!("writing {}", file.path)))?;
        f.flush()
            .map_err(|e| full(e, format!("writing {}", file.path)))?;
    }
    Ok(())
}

/// fatfs 0.3.6 writes a long-name entry before "." and before ".." in each
/// new directory (rafalh/rust-fatfs#100, fixed only in 0.4), so they miss
/// the first two slots and fsck.fat renames and deletes them; it also points
/// ".." of a top-level directory at the FAT32 root cluster where the spec
/// wants 0. fatfs exposes no cluster numbers, so this walks the unmounted
/// volume itself and rewrites each directory's first four slots as ".",
/// "..", deleted, deleted.
fn fix_dot_entries<T: Read + Write + Seek>(part: &mut T) -> io::Result<()> {
    let bad =
        |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("FAT layout: {what}"));
    let mut b = [0u8; 512];
    part.seek(SeekFrom::Start(0))?;
    part.read_exact(&mut b)?;
    let le = |o: usize, n: usize| {
        b[o..o + n]
            .iter()
            .rev()
            .fold(0u64, |a, &x| a << 8 | u64::from(x))
    };
    let (sector, fat16_sectors) = (le(11, 2), le(22, 2));
    let fat32 = fat16_sectors == 0;
    let cluster = sector * le(13, 1);
    let fat_sectors = if fat32 { le(36, 4) } else { fat16_sectors };
    let fat_at = le(14, 2) * sector;
    let root_at = fat_at + le(16, 1) * fat_sectors * sector;
    let root_len = (le(17, 2) * DIR_ENTRY).div_ceil(sector.max(1)) * sector;
    let data_at = root_at + root_len;
    let (width, end) = if fat32 { (4, 0x0FFF_FFF8) } else { (2, 0xFFF8) };
    if cluster == 0 {
        return Err(bad("zero cluster size"));
    }
    // (first cluster, depth); cluster 0 at depth 0 is a FAT16 root.
    let mut todo = vec![(if fat32 { le(44, 4) } else { 0 }, 0u32)];
    while let Some((first, depth)) = todo.pop() {
        if depth > 64 {
            return Err(bad("directories nest deeper than 64 levels"));
        }
        let mut spans = Vec::new();
        let mut c = first;
        if first == 0 {
            spans.push((root_at, root_len));
        }
        while (2..end).contains(&c) && spans.len() <= 1 << 20 {
            spans.push((data_at + (c - 2) * cluster, cluster));
            let mut e = [0u8; 4];
            part.seek(SeekFrom::Start(fat_at + c * width))?;
            part.read_exact(&mut e[..width as usize])?;
            c = u64::from(u32::from_le_bytes(e) & 0x0FFF_FFFF);
        }
        let mut buf = Vec::new();
        for &(at, len) in &spans {
            let start = buf.len();
            buf.resize(start + len as usize, 0);
            part.seek(SeekFrom::Start(at))?;
            part.read_exact(&mut buf[start..])?;
        }
        let lfn = |e: &[u8]| e[11] == 0x0F;
        if depth > 0
            && buf.len() >= 128
            && lfn(&buf[0..32])
            && &buf[32..43] == b".          "
            && lfn(&buf[64..96])
            && &buf[96..107] == b"..         "
        {
            let mut new = [0u8; 128];
            new[..32].copy_from_slice(&buf[32..64]);
            new[32..64].copy_from_slice(&buf[96..128]);
            if depth == 1 {
                // The first-cluster fields (high and low halves) of "..".
                new[52..54].fill(0);
                new[58..60].fill(0);
            }
            new[64] = 0xE5;
            new[96] = 0xE5;
            part.seek(SeekFrom::Start(spans[0].0))?;
            part.write_all(&new)?;
        }
        for e in buf.chunks_exact(DIR_ENTRY as usize) {
            if e[0] == 0 {
                break;
            }
            if e[0] != 0xE5 && e[0] != b'.' && !lfn(e) && e[11] & 0x10 != 0 {
                let c = u64::from(u16::from_le_bytes([e[20], e[21]])) << 16
                    | u64::from(u16::from_le_bytes([e[26], e[27]]));
                todo.push((c, depth + 1));
            }
        }
    }
    Ok(())
}

/// Every file, recursively, as ("dir/name", size), sorted by path.
pub fn list_files<T: Read + Write + Seek>(part: T) -> Result<Vec<(String, u64)>, FatError> {
    let fs = mount(part)?;
    let mut out = Vec::new();
    let mut pending = vec![(String::new(), fs.root_dir())];
    while let Some((prefix, dir)) = pending.pop() {
        for entry in dir.iter() {
            let entry = entry.map_err(io_err("reading a directory"))?;
            let name = entry.file_name();
            if name == "." || name == ".." {
                continue;
            }
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if entry.is_dir() {
                pending.push((path, entry.to_dir()));
            } else if entry.is_file() {
                out.push((path, entry.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The contents of the file at `path` ("dir/name"; FAT ignores case).
pub fn read_file<T: Read + Write + Seek>(part: T, path: &str) -> Result<Vec<u8>, FatError> {
    let fs = mount(part)?;
    let mut file = fs
        .root_dir()
        .open_file(path.trim_start_matches('/'))
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => FatError::NotFound(path.to_string()),
            _ => FatError::Io {
                what: format!("opening {path}"),
                source: e,
            },
        })?;
    let mut out = Vec::new();
    file.read_to_end(&mut out)
        .map_err(io_err(format!("reading {path}")))?;
    Ok(out)
}

/// (used bytes, total bytes) of the data area, counted in clusters.
pub fn usage<T: Read + Write + Seek>(part: T) -> Result<(u64, u64), FatError> {
    let fs = mount(part)?;
    let stats = fs.stats().map_err(io_err("reading free space"))?;
    let cluster = u64::from(stats.cluster_size());
    let total = u64::from(stats.total_clusters()) * cluster;
    let free = u64::from(stats.free_clusters()) * cluster;
    Ok((total.saturating_sub(free), total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slice::PartitionSlice;
    use std::fs::File;
    use std::path::Path;
    use std::process::Command;

    const MIB: u64 = 1 << 20;
    const OFFSET: u64 = MIB;
    const SIZE: u64 = 48 * MIB;
    const TIME: u64 = 1_700_000_000; // 2023-11-14T22:13:20Z

    /// Host tools are cross-checks, not optional extras: a missing one fails.
    fn tool(name: &str, package: &str) -> Command {
        let path = ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file());
        let msg = format!(
            "{name} is missing; install Debian package {package} (apt-get install {package})"
        );
        let mut cmd = Command::new(path.expect(&msg));
        cmd.env("MTOOLS_SKIP_CHECK", "1");
        cmd
    }

    fn file(path: &str, data: impl Into<Vec<u8>>) -> FatFile {
        FatFile {
            path: path.into(),
            data: data.into(),
        }
    }

    /// Long names, a nested empty file, and a directory spanning several
    /// 512-byte clusters (what the dot-entry repair must walk).
    fn boot_files() -> Vec<FatFile> {
        let mut files = vec![
            file(
                "start4.elf",
                (0..300_000u32)
                    .map(|i| (i * 7 % 251) as u8)
                    .collect::<Vec<_>>(),
            ),
            file("bcm2711-rpi-4-b.dtb", b"dtb".repeat(1000)),
            file("autoboot.txt", b"[all]\ntryboot_a_b=1\n".to_vec()),
            file("overlays/deep/er/empty.bin", Vec::new()),
            file("KERNEL8.IMG", vec![1; 70_000]),
        ];
        files.extend(
            (0..40).map(|i| file(&format!("overlays/overlay-number-{i}.dtbo"), vec![i; 100])),
        );
        files
    }

    /// A temp image with a patterned margin around the partition, so a
    /// write outside the slice would show.
    fn build(files: &[FatFile], fill: u8) -> (tempfile::NamedTempFile, Result<(), FatError>) {
        let img = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(img.path(), vec![fill; (OFFSET + SIZE + MIB) as usize]).unwrap();
        let r = format_and_fill(
            slice(img.path()),
            SIZE,
            "KEEL-BOOTA",
            0x1234_abcd,
            files,
            TIME,
        );
        (img, r)
    }

    fn slice(img: &Path) -> PartitionSlice<File> {
        let f = File::options().read(true).write(true).open(img).unwrap();
        PartitionSlice::new(f, OFFSET, SIZE).unwrap()
    }

    fn fsck_clean(volume: &[u8]) {
        let part = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(part.path(), volume).unwrap();
        let out = tool("fsck.vfat", "dosfstools")
            .arg("-n")
            .arg(part.path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        // A clean volume gets only the banner, progress and the summary.
        let clean = |l: &str| {
            l.starts_with("fsck.fat") || l.starts_with("Checking") || l.contains(" files, ")
        };
        assert!(
            out.status.success() && text.lines().all(clean),
            "fsck.vfat -n:\n{text}"
        );
    }

    #[test]
    fn builds_fat32_readable_by_fatfs_and_leaves_neighbours_alone() {
        let files = boot_files();
        let (img, r) = build(&files, 0xA5);
        r.unwrap();
        let bytes = std::fs::read(img.path()).unwrap();
        assert!(bytes[..OFFSET as usize].iter().all(|&b| b == 0xA5));
        assert!(bytes[(OFFSET + SIZE) as usize..].iter().all(|&b| b == 0xA5));
        let fs = mount(slice(img.path())).unwrap();
        assert_eq!(fs.fat_type(), FatType::Fat32);
        assert_eq!(
            (fs.volume_id(), fs.volume_label()),
            (0x1234_abcd, "KEEL-BOOTA".into())
        );
        let e = fs
            .root_dir()
            .iter()
            .map(Result::unwrap)
            .find(|e| e.file_name() == "start4.elf")
            .unwrap();
        let m = e.modified();
        assert_eq!((m.date.year, m.date.month, m.date.day), (2023, 11, 14));
        assert_eq!((m.time.hour, m.time.min, m.time.sec), (22, 13, 20));
        drop(fs);

        let mut want: Vec<_> = files
            .iter()
            .map(|f| (f.path.clone(), f.data.len() as u64))
            .collect();
        want.sort();
        // Read-only, as the card checker opens images: listing must not write.
        let ro = PartitionSlice::new(File::open(img.path()).unwrap(), OFFSET, SIZE).unwrap();
        assert_eq!(list_files(ro).unwrap(), want);
        for f in &files {
            assert_eq!(
                read_file(slice(img.path()), &f.path).unwrap(),
                f.data,
                "{}",
                f.path
            );
        }
        assert!(matches!(
            read_file(slice(img.path()), "nope.txt"),
            Err(FatError::NotFound(_))
        ));
        let (used, total) = usage(slice(img.path())).unwrap();
        assert!((375_000..420_000).contains(&used), "used {used}");
        assert!(total > 46 * MIB && total < SIZE, "total {total}");
    }

    #[test]
    fn fsck_vfat_and_mtools_agree() {
        let files = boot_files();
        let (img, r) = build(&files, 0);
        r.unwrap();
        let bytes = std::fs::read(img.path()).unwrap();
        let volume = &bytes[OFFSET as usize..(OFFSET + SIZE) as usize];
        assert_eq!(&volume[82..90], b"FAT32   ");
        fsck_clean(volume);

        let at = format!("{}@@{OFFSET}", img.path().display());
        let out = tool("mdir", "mtools")
            .args(["-i", &at, "-/", "-b", "::"])
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "mdir: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = tempfile::tempdir().unwrap();
        for f in &files {
            let want = format!("::/{}", f.path);
            assert!(
                listing.lines().any(|l| l.eq_ignore_ascii_case(&want)),
                "{want} not in\n{listing}"
            );
            let dest = dir.path().join(f.path.replace('/', "_"));
            let st = tool("mcopy", "mtools")
                .args(["-n", "-i", &at, &want])
                .arg(&dest)
                .status()
                .unwrap();
            assert!(st.success(), "mcopy {want}");
            assert_eq!(std::fs::read(&dest).unwrap(), f.data, "{want}");
        }
        let out = tool("minfo", "mtools")
            .args(["-i", &at, "::"])
            .output()
            .unwrap();
        let info = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(
            info.contains("keel-boota") && info.contains("1234abcd"),
            "{info}"
        );
    }

    #[test]
    fn two_builds_are_byte_identical_whatever_the_order_or_old_contents() {
        let mut files = boot_files();
        let (a, r) = build(&files, 0);
        r.unwrap();
        files.reverse();
        let (b, r) = build(&files, 0x5A);
        r.unwrap();
        let span = OFFSET as usize..(OFFSET + SIZE) as usize;
        let (a, b) = (
            std::fs::read(a.path()).unwrap(),
            std::fs::read(b.path()).unwrap(),
        );
        assert!(a[span.clone()] == b[span], "FAT builds differ");
    }

    #[test]
    fn too_many_bytes_is_full_with_advice() {
        let (_img, r) = build(&[file("huge.bin", vec![0; 49 * MIB as usize])], 0);
        let err = r.unwrap_err();
        assert!(
            matches!(err, FatError::Full { needed, available } if needed > available),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("raise the partition size in the board config"),
            "{err}"
        );
        // 1-byte files each take a 512-byte cluster plus directory entries:
        // the estimate must reject them before fatfs runs out mid-write.
        let files: Vec<_> = (0..100_000)
            .map(|i| file(&format!("d{}/file-number-{i}.txt", i % 7), [1]))
            .collect();
        assert!(matches!(build(&files, 0).1, Err(FatError::Full { .. })));
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(matches!(
            build(&[file("a/../b", [])], 0).1,
            Err(FatError::BadPath { .. })
        ));
        let dup = [file("x.txt", []), file("X.TXT", [])];
        assert!(matches!(build(&dup, 0).1, Err(FatError::Duplicate(_))));
        assert!(matches!(
            label_bytes("MUCH-TOO-LONG"),
            Err(FatError::Label(_))
        ));
        let mut junk = std::io::Cursor::new(vec![0u8; 4 * MIB as usize]);
        assert!(matches!(list_files(&mut junk), Err(FatError::NotFat(_))));
    }

    #[test]
    fn partitions_of_40_mib_and_up_are_fat32() {
        // 64, 128 and 256 MiB are where fatfs alone silently writes FAT16.
        for mib in [40, 64, 100, 128, 256] {
            let img = tempfile::NamedTempFile::new().unwrap();
            img.as_file().set_len(mib * MIB).unwrap();
            format_and_fill(img.as_file(), mib * MIB, "X", 1, &[], 0).unwrap();
            let fs = mount(img.as_file()).unwrap();
            assert_eq!(fs.fat_type(), FatType::Fat32, "{mib} MiB");
            assert!(fs.stats().unwrap().total_clusters() >= 65_525, "{mib} MiB");
        }
    }

    #[test]
    fn small_partitions_fall_back_to_fat16() {
        let mut disk = std::io::Cursor::new(vec![0u8; 16 * MIB as usize]);
        format_and_fill(&mut disk, 16 * MIB, "SEL", 7, &boot_files(), 0).unwrap();
        assert_eq!(mount(&mut disk).unwrap().fat_type(), FatType::Fat16);
        assert_eq!(
            read_file(&mut disk, "AUTOBOOT.TXT").unwrap(),
            boot_files()[2].data
        );
        fsck_clean(disk.get_ref());
    }

    #[test]
    fn dos_dates_clamp_and_convert() {
        let ymd = |t| {
            let d = dos_date_time(t);
            (d.date.year, d.date.month, d.date.day, d.time.sec)
        };
        assert_eq!(ymd(0), (1980, 1, 1, 0));
        assert_eq!(ymd(951_782_400), (2000, 2, 29, 0));
        assert_eq!(ymd(u64::MAX), (2107, 12, 31, 58));
    }
}
