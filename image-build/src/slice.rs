//! A window onto one partition of a card image, so filesystem writers can
//! treat the partition as a whole device without ever touching its neighbours.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// Reads, writes and seeks confined to `[start, start + len)` of `inner`.
///
/// Positions are relative to the partition start. Reads stop at the end of
/// the partition; a write that would cross the end fails before writing
/// anything, because a filesystem writer that overflows its partition must
/// not silently corrupt the next one.
#[derive(Debug)]
pub struct PartitionSlice<T> {
    inner: T,
    start: u64,
    len: u64,
    pos: u64,
}

impl<T> PartitionSlice<T> {
    /// Wraps `inner`; the position starts at the beginning of the partition.
    pub fn new(inner: T, start: u64, len: u64) -> io::Result<Self> {
        if start.checked_add(len).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("partition at byte {start} with length {len} lies beyond the largest possible offset"),
            ));
        }
        Ok(Self {
            inner,
            start,
            len,
            pos: 0,
        })
    }

    pub fn into_inner(self) -> T {
        self.inner
    }

    /// The partition's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }
}

impl<T: Seek> PartitionSlice<T> {
    /// Moves the inner cursor to our position: the inner value may be shared
    /// (e.g. `&mut File` used for several partitions), so never trust where
    /// it was left.
    fn sync_inner(&mut self) -> io::Result<()> {
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        Ok(())
    }
}

impl<T: Read + Seek> Read for PartitionSlice<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (buf.len() as u64).min(self.remaining()) as usize;
        if want == 0 {
            return Ok(0);
        }
        self.sync_inner()?;
        let n = self.inner.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<T: Write + Seek> Write for PartitionSlice<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if buf.len() as u64 > self.remaining() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "write of {} bytes at offset {} does not fit the {}-byte partition; the partition is too small",
                    buf.len(),
                    self.pos,
                    self.len
                ),
            ));
        }
        self.sync_inner()?;
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<T: Seek> Seek for PartitionSlice<T> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        // Seeking past the end is allowed (as for files); reads there return
        // 0 bytes and writes fail.
        match target {
            Some(t) => {
                self.pos = t;
                Ok(t)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing partition offset",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn disk() -> Cursor<Vec<u8>> {
        Cursor::new(vec![0xAA; 64])
    }

    #[test]
    fn reads_stop_at_partition_end() {
        let mut d = disk();
        d.get_mut()[16..32].copy_from_slice(&[1; 16]);
        let mut s = PartitionSlice::new(d, 16, 16).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert_eq!(out, vec![1; 16]);
        assert_eq!(s.read(&mut [0; 4]).unwrap(), 0);
    }

    #[test]
    fn writes_stay_inside_and_overflow_fails_without_spilling() {
        let mut s = PartitionSlice::new(disk(), 16, 16).unwrap();
        s.write_all(&[7; 10]).unwrap();
        let err = s.write_all(&[9; 10]).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err}");
        s.write_all(&[8; 6]).unwrap();
        assert!(s.write(&[1]).is_err());
        let d = s.into_inner().into_inner();
        assert_eq!(&d[..16], &[0xAA; 16]);
        assert_eq!(&d[16..26], &[7; 10]);
        assert_eq!(&d[26..32], &[8; 6]);
        assert_eq!(&d[32..], &[0xAA; 32]);
    }

    #[test]
    fn seek_is_relative_to_partition() {
        let mut s = PartitionSlice::new(disk(), 8, 32).unwrap();
        assert_eq!(s.seek(SeekFrom::End(-4)).unwrap(), 28);
        s.write_all(&[5; 4]).unwrap();
        assert_eq!(s.seek(SeekFrom::Current(-2)).unwrap(), 30);
        assert!(s.seek(SeekFrom::Current(-31)).is_err());
        assert_eq!(s.seek(SeekFrom::Start(40)).unwrap(), 40);
        assert_eq!(s.read(&mut [0; 4]).unwrap(), 0);
        assert!(s.write(&[1]).is_err());
        let d = s.into_inner().into_inner();
        assert_eq!(&d[36..40], &[5; 4]);
        assert_eq!(d[40], 0xAA);
    }

    #[test]
    fn shared_inner_cursor_is_repositioned() {
        let mut d = disk();
        {
            let mut a = PartitionSlice::new(&mut d, 0, 8).unwrap();
            a.write_all(&[1; 4]).unwrap();
        }
        d.seek(SeekFrom::Start(50)).unwrap();
        let mut a = PartitionSlice::new(&mut d, 0, 8).unwrap();
        let mut buf = [0; 8];
        a.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [1, 1, 1, 1, 0xAA, 0xAA, 0xAA, 0xAA]);
    }

    #[test]
    fn overflowing_span_is_rejected() {
        assert!(PartitionSlice::new(disk(), u64::MAX, 2).is_err());
    }
}
