//! Just enough FAT12/16/32 to find where a small file's data lies in a
//! partition, so a boot-state file can be rewritten in place: one sector,
//! same length, no allocation, no directory change.

/// Byte access to one partition, as the device's card or a host image
/// provides it.
pub trait PartitionIo {
    type Error: From<FatError>;
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error>;
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), Self::Error>;
    /// Makes the writes durable.
    fn sync(&mut self) -> Result<(), Self::Error>;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FatError {
    #[error("not a FAT filesystem I can read ({0})")]
    Unreadable(&'static str),
    #[error("in-place rewrite needs {expected} bytes within one sector, got {got}")]
    Rewrite { expected: u64, got: usize },
}

/// Where a file's first data bytes are, relative to the partition start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpot {
    pub offset: u64,
    pub size: u64,
    pub cluster_bytes: u64,
}

struct Geometry {
    sector: u64,
    cluster: u64,
    fat_offset: u64,
    fat32: bool,
    fat16: bool,
    root_offset: u64,
    root_bytes: u64,
    root_cluster: u32,
    data_offset: u64,
}

fn bad(detail: &'static str) -> FatError {
    FatError::Unreadable(detail)
}

fn geometry<P: PartitionIo>(part: &mut P) -> Result<Geometry, P::Error> {
    let mut bpb = [0u8; 512];
    part.read_at(0, &mut bpb)?;
    let u16_at = |o: usize| u16::from_le_bytes([bpb[o], bpb[o + 1]]) as u64;
    let u32_at = |o: usize| u32::from_le_bytes([bpb[o], bpb[o + 1], bpb[o + 2], bpb[o + 3]]) as u64;
    if bpb[510] != 0x55 || bpb[511] != 0xaa {
        return Err(bad("no boot sector signature").into());
    }
    let sector = u16_at(11);
    let per_cluster = bpb[13] as u64;
    if !matches!(sector, 512 | 1024 | 2048 | 4096)
        || per_cluster == 0
        || !per_cluster.is_power_of_two()
    {
        return Err(bad("bad sector or cluster size").into());
    }
    let reserved = u16_at(14);
    let fats = bpb[16] as u64;
    let root_entries = u16_at(17);
    let fat_sectors = if u16_at(22) != 0 {
        u16_at(22)
    } else {
        u32_at(36)
    };
    let total = if u16_at(19) != 0 {
        u16_at(19)
    } else {
        u32_at(32)
    };
    let root_sectors = (root_entries * 32).div_ceil(sector);
    let data_sector = reserved + fats * fat_sectors + root_sectors;
    if fats == 0 || fat_sectors == 0 || data_sector >= total {
        return Err(bad("inconsistent boot sector").into());
    }
    let clusters = (total - data_sector) / per_cluster;
    let fat32 = clusters >= 65525;
    Ok(Geometry {
        sector,
        cluster: sector * per_cluster,
        fat_offset: reserved * sector,
        fat32,
        fat16: !fat32 && clusters >= 4085,
        root_offset: (reserved + fats * fat_sectors) * sector,
        root_bytes: root_sectors * sector,
        root_cluster: u32_at(44) as u32,
        data_offset: data_sector * sector,
    })
}

fn next_cluster<P: PartitionIo>(
    part: &mut P,
    g: &Geometry,
    c: u32,
) -> Result<Option<u32>, P::Error> {
    let (next, end) = if g.fat32 {
        let mut b = [0u8; 4];
        part.read_at(g.fat_offset + c as u64 * 4, &mut b)?;
        (u32::from_le_bytes(b) & 0x0fff_ffff, 0x0fff_fff8)
    } else if g.fat16 {
        let mut b = [0u8; 2];
        part.read_at(g.fat_offset + c as u64 * 2, &mut b)?;
        (u16::from_le_bytes(b) as u32, 0xfff8)
    } else {
        let mut b = [0u8; 2];
        part.read_at(g.fat_offset + c as u64 * 3 / 2, &mut b)?;
        let v = u16::from_le_bytes(b) as u32;
        (
            if c.is_multiple_of(2) {
                v & 0xfff
            } else {
                v >> 4
            },
            0xff8,
        )
    };
    Ok(if next >= end || next < 2 {
        None
    } else {
        Some(next)
    })
}

/// Finds `short_name` (8.3, upper case, e.g. "AUTOBOOTTXT") in the root directory.
pub fn find_root_file<P: PartitionIo>(
    part: &mut P,
    short_name: &[u8; 11],
) -> Result<Option<FileSpot>, P::Error> {
    let g = geometry(part)?;
    let mut regions = Vec::new();
    if g.fat32 {
        let mut c = g.root_cluster;
        // A bound on the chain: a corrupt FAT must not loop forever.
        for _ in 0..4096 {
            if c < 2 {
                return Err(bad("root directory cluster out of range").into());
            }
            regions.push((g.data_offset + (c as u64 - 2) * g.cluster, g.cluster));
            match next_cluster(part, &g, c)? {
                Some(n) => c = n,
                None => break,
            }
        }
    } else {
        regions.push((g.root_offset, g.root_bytes));
    }
    let mut buf = vec![0u8; g.sector as usize];
    for (start, len) in regions {
        for s in 0..len / g.sector {
            part.read_at(start + s * g.sector, &mut buf)?;
            for e in buf.chunks(32) {
                if e[0] == 0 {
                    return Ok(None);
                }
                let attr = e[11];
                if e[0] == 0xe5 || attr == 0x0f || attr & 0x18 != 0 || &e[..11] != short_name {
                    continue;
                }
                let hi = if g.fat32 {
                    u16::from_le_bytes([e[20], e[21]]) as u32
                } else {
                    0
                };
                let cluster = (hi << 16) | u16::from_le_bytes([e[26], e[27]]) as u32;
                let size = u32::from_le_bytes([e[28], e[29], e[30], e[31]]) as u64;
                if cluster < 2 {
                    return Ok(None);
                }
                return Ok(Some(FileSpot {
                    offset: g.data_offset + (cluster as u64 - 2) * g.cluster,
                    size,
                    cluster_bytes: g.cluster,
                }));
            }
        }
    }
    Ok(None)
}

/// Replaces a small file's contents with `data` of exactly the same length,
/// rewriting the one sector that holds it.
pub fn rewrite_in_place<P: PartitionIo>(
    part: &mut P,
    spot: FileSpot,
    data: &[u8],
) -> Result<(), P::Error> {
    if data.len() as u64 != spot.size || spot.size > 512 {
        return Err(FatError::Rewrite {
            expected: spot.size,
            got: data.len(),
        }
        .into());
    }
    let mut sector = [0u8; 512];
    part.read_at(spot.offset, &mut sector)?;
    sector[..data.len()].copy_from_slice(data);
    part.write_at(spot.offset, &sector)?;
    part.sync()
}
