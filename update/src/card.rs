//! A card: a whole-disk device (`/dev/mmcblk0`, `/dev/vda`) or an image
//! file, with its partitions located through the MBR. The applier and the
//! boot backends only ever see byte ranges of partitions.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use durable::direct::{self, AlignedBuf};
use std::path::{Path, PathBuf};

use card_format::mbr::{LayoutError, MbrError, PartitionTable, SECTOR};

#[derive(Debug, thiserror::Error)]
pub enum CardError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Table { path: PathBuf, source: MbrError },
    #[error("{path}: {source}")]
    Layout { path: PathBuf, source: LayoutError },
    #[error("{path} has no partition {number}; is this a Keel card?")]
    NoPartition { path: PathBuf, number: u8 },
    #[error("partition {number}: {detail}")]
    Format { number: u8, detail: String },
    #[error("I/O on partition {number}: {source}")]
    Io { number: u8, source: std::io::Error },
}

pub struct Card {
    path: PathBuf,
    file: File,
    table: PartitionTable,
    /// Writes left before the card "loses power" (power-cut tests).
    write_budget: Option<u64>,
    /// Writes left before the card starts dropping writes while reporting
    /// success, as a worn-out SD card does (read-back tests).
    honest_writes: Option<u64>,
    /// The same card opened with O_DIRECT, for aligned blocks: written data
    /// then goes from the applier's buffer to the medium without a copy
    /// into the page cache and its writeback (a third of the applier's CPU
    /// time otherwise), and the read-back reads the medium. None where the
    /// file system refuses O_DIRECT (tmpfs).
    direct: Option<File>,
    /// For reads through `direct`, and writes from unaligned buffers.
    bounce: AlignedBuf,
}

impl Card {
    pub fn open(path: &Path) -> Result<Card, CardError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| CardError::Open {
                path: path.to_owned(),
                source,
            })?;
        let table = PartitionTable::read_from(&mut file).map_err(|source| CardError::Table {
            path: path.to_owned(),
            source,
        })?;
        // Every write goes through this table: a forged one must not be
        // able to aim a write at the running slot or past the card's end.
        let size = file
            .seek(SeekFrom::End(0))
            .map_err(|source| CardError::Open {
                path: path.to_owned(),
                source,
            })?;
        table
            .check_writable(&keel_contract::partition::ALL, size / SECTOR)
            .map_err(|source| CardError::Layout {
                path: path.to_owned(),
                source,
            })?;
        let direct = direct::open_rw(path).map_err(|source| CardError::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(Card {
            path: path.to_owned(),
            file,
            table,
            write_budget: None,
            honest_writes: None,
            direct,
            bounce: AlignedBuf::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn table(&self) -> &PartitionTable {
        &self.table
    }

    /// Byte offset and length of partition `number`.
    pub fn span(&self, number: u8) -> Result<(u64, u64), CardError> {
        let p = self
            .table
            .get(number)
            .ok_or_else(|| CardError::NoPartition {
                path: self.path.clone(),
                number,
            })?;
        Ok((p.start_lba * SECTOR, p.sectors * SECTOR))
    }

    /// Reads `buf.len()` bytes at `offset` inside partition `number`.
    pub fn read_at(&mut self, number: u8, offset: u64, buf: &mut [u8]) -> Result<(), CardError> {
        self.read_with(number, offset, buf.len(), |data| buf.copy_from_slice(data))
    }

    /// Reads `n` bytes at `offset` inside partition `number` and hands them
    /// to `f`: aligned blocks straight from the medium into the card's own
    /// buffer, without another copy.
    pub fn read_with<T>(
        &mut self,
        number: u8,
        offset: u64,
        n: usize,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, CardError> {
        let (start, len) = self.span(number)?;
        check_range(number, offset, n as u64, len)?;
        let io = |source| CardError::Io { number, source };
        let at = start + offset;
        let buf = self.bounce.get(n);
        match &self.direct {
            Some(file) if direct::aligned(at, n) => file.read_exact_at(buf, at).map_err(io)?,
            _ => self.file.read_exact_at(buf, at).map_err(io)?,
        }
        Ok(f(buf))
    }

    /// Simulates a power cut for tests: after `writes` more writes, every
    /// write fails and nothing more reaches the card.
    pub fn cut_power_after(&mut self, writes: u64) {
        self.write_budget = Some(writes);
    }

    /// Simulates a failing card for tests: after `writes` more writes,
    /// partition writes report success but change nothing.
    pub fn drop_writes_after(&mut self, writes: u64) {
        self.honest_writes = Some(writes);
    }

    /// Writes `buf` at `offset` inside partition `number`, never past its end.
    pub fn write_at(&mut self, number: u8, offset: u64, buf: &[u8]) -> Result<(), CardError> {
        let (start, len) = self.span(number)?;
        check_range(number, offset, buf.len() as u64, len)?;
        if let Some(left) = self.write_budget.as_mut() {
            if *left == 0 {
                return Err(CardError::Io {
                    number,
                    source: std::io::Error::other("power cut (test)"),
                });
            }
            *left -= 1;
        }
        if let Some(left) = self.honest_writes.as_mut() {
            if *left == 0 {
                return Ok(());
            }
            *left -= 1;
        }
        let io = |source| CardError::Io { number, source };
        let at = start + offset;
        match &self.direct {
            Some(file) if direct::aligned(at, buf.len()) => {
                if direct::buffer_aligned(buf) {
                    file.write_all_at(buf, at).map_err(io)
                } else {
                    let bounce = self.bounce.get(buf.len());
                    bounce.copy_from_slice(buf);
                    file.write_all_at(bounce, at).map_err(io)
                }
            }
            _ => self.file.write_all_at(buf, at).map_err(io),
        }
    }

    /// Reads from the gap before the first partition (where the U-Boot boot
    /// state lives), by byte offset from the start of the disk.
    pub fn read_gap(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), CardError> {
        self.check_gap(offset, buf.len() as u64)?;
        let io = |source| CardError::Io { number: 0, source };
        self.file.seek(SeekFrom::Start(offset)).map_err(io)?;
        self.file.read_exact(buf).map_err(io)
    }

    /// Writes into the gap before the first partition; never over the MBR
    /// or any partition.
    pub fn write_gap(&mut self, offset: u64, buf: &[u8]) -> Result<(), CardError> {
        self.check_gap(offset, buf.len() as u64)?;
        if let Some(left) = self.write_budget.as_mut() {
            if *left == 0 {
                return Err(CardError::Io {
                    number: 0,
                    source: std::io::Error::other("power cut (test)"),
                });
            }
            *left -= 1;
        }
        let io = |source| CardError::Io { number: 0, source };
        self.file.seek(SeekFrom::Start(offset)).map_err(io)?;
        self.file.write_all(buf).map_err(io)
    }

    fn check_gap(&self, offset: u64, n: u64) -> Result<(), CardError> {
        let first = self
            .table
            .partitions
            .iter()
            .map(|p| p.start_lba * SECTOR)
            .min()
            .unwrap_or(0);
        if offset < SECTOR || offset + n > first {
            return Err(CardError::Format {
                number: 0,
                detail: format!(
                    "{n} bytes at {offset} are outside the gap before the first partition"
                ),
            });
        }
        Ok(())
    }

    /// On a block device, drops partition `number`'s clean pages from the
    /// page cache so the next reads come from the medium, not from memory.
    /// Call after [`Card::sync`]. An image file is left alone: there the
    /// page cache is the file's content, and the card it is later written
    /// to is checked by the flashing tool (bmaptool verifies).
    pub fn drop_cached(&mut self, number: u8) -> Result<(), CardError> {
        use std::os::unix::fs::FileTypeExt;
        let (start, len) = self.span(number)?;
        let meta = self
            .file
            .metadata()
            .map_err(|source| CardError::Io { number, source })?;
        if !meta.file_type().is_block_device() {
            return Ok(());
        }
        crate::sys::drop_cached(&self.file, start, len)
            .map_err(|source| CardError::Io { number, source })
    }

    /// Flushes written data to the medium: the ordering point every
    /// power-cut argument relies on.
    pub fn sync(&mut self) -> Result<(), CardError> {
        self.file
            .sync_all()
            .map_err(|source| CardError::Io { number: 0, source })
    }
}

fn check_range(number: u8, offset: u64, n: u64, len: u64) -> Result<(), CardError> {
    if offset.checked_add(n).is_none_or(|end| end > len) {
        return Err(CardError::Format {
            number,
            detail: format!("{n} bytes at offset {offset} do not fit the partition's {len} bytes"),
        });
    }
    Ok(())
}
