//! Direct I/O (`O_DIRECT`): data goes between a buffer and the medium
//! without a copy into the page cache and its later writeback, and reads
//! come from the medium. The kernel wants the buffer's address, the file
//! offset and the length aligned to the device's logical block size.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// 4096 covers devices with 512-byte and 4 KiB logical blocks.
pub const ALIGN: usize = 4096;

/// Whether `len` bytes at `offset` may go through a direct descriptor.
pub fn aligned(offset: u64, len: usize) -> bool {
    offset.is_multiple_of(ALIGN as u64) && len.is_multiple_of(ALIGN) && len > 0
}

/// Whether `buf` starts on an [`ALIGN`] boundary.
pub fn buffer_aligned(buf: &[u8]) -> bool {
    buf.as_ptr().align_offset(ALIGN) == 0
}

/// Opens `path` read-write with `O_DIRECT`; `None` where the file system
/// refuses it (tmpfs, some FUSE file systems), so the caller keeps its
/// buffered descriptor.
pub fn open_rw(path: &Path) -> io::Result<Option<File>> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A reusable buffer whose slices start on an [`ALIGN`] boundary, without
/// unsafe code: over-allocated and used from its first aligned byte.
#[derive(Default)]
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    pub fn new() -> AlignedBuf {
        AlignedBuf::default()
    }

    /// The first `n` bytes, aligned; contents are whatever was there
    /// (zeroes when the buffer grows).
    pub fn get(&mut self, n: usize) -> &mut [u8] {
        if self.raw.len() < self.start + n {
            self.raw = vec![0; n + ALIGN];
            self.start = self.raw.as_ptr().align_offset(ALIGN);
        }
        &mut self.raw[self.start..self.start + n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_aligned_and_reused() {
        let mut b = AlignedBuf::new();
        let p = b.get(10_000).as_ptr();
        assert!(buffer_aligned(b.get(10_000)));
        assert_eq!(b.get(4096).as_ptr(), p, "a smaller slice reuses the buffer");
        assert!(buffer_aligned(b.get(1 << 20)));
        assert!(aligned(8192, 4096));
        assert!(!aligned(512, 4096));
        assert!(!aligned(4096, 100));
        assert!(!aligned(0, 0));
    }

    #[test]
    fn writes_and_reads_through_a_direct_descriptor() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, vec![0u8; 3 * ALIGN]).unwrap();
        let Some(f) = open_rw(&path).unwrap() else {
            // This file system refuses O_DIRECT: open_rw said so instead
            // of failing, which is what is promised.
            return;
        };
        let mut b = AlignedBuf::new();
        b.get(ALIGN).fill(7);
        f.write_all_at(b.get(ALIGN), ALIGN as u64).unwrap();
        let mut r = AlignedBuf::new();
        f.read_exact_at(r.get(ALIGN), ALIGN as u64).unwrap();
        assert!(r.get(ALIGN).iter().all(|&x| x == 7));
        let all = std::fs::read(&path).unwrap();
        assert_eq!(&all[..ALIGN], &vec![0u8; ALIGN][..]);
        assert_eq!(&all[ALIGN..2 * ALIGN], &vec![7u8; ALIGN][..]);
    }
}
