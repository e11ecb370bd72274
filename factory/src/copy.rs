//! Writing an image's mapped blocks to a card and reading them back.
//!
//! Only the ranges the block map lists are written (as `bmaptool copy`
//! does); the rest of the card keeps whatever it held, which the image
//! does not care about. A reader thread keeps the next chunks coming while
//! the current one is written, so the card never waits for the source.
//!
//! Verification reads every written range back from the medium, not from
//! memory (`O_DIRECT`, or the page cache dropped after `fsync`), and
//! compares it with the block map's SHA-256: a card that lies about its
//! size, or drops writes, is caught here. Because the block map's checksums
//! are of the image, this also proves the image was read correctly, so
//! the source is not hashed separately.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use durable::direct::{self, AlignedBuf};
use sha2::{Digest, Sha256};

/// Bytes moved per request: large enough to keep an SD card's controller
/// busy, small enough that the progress bar moves.
pub const CHUNK: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("cannot open {path} for {what}: {source}")]
    Open {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot read the image {path} at byte {offset}: {source}")]
    ReadImage {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    #[error("writing {path} failed at byte {offset}: {source}; the card is not usable (a worn or write-protected card? try another)")]
    Write {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    #[error("reading {path} back failed at byte {offset}: {source}; the card is not usable")]
    ReadBack {
        path: PathBuf,
        offset: u64,
        source: io::Error,
    },
    #[error("bytes {start}..{end} of {path} read back differently from the image (sha256 {actual}, expected {expected}): the card is faulty or not the size it claims; set it aside")]
    Mismatch {
        path: PathBuf,
        start: u64,
        end: u64,
        expected: String,
        actual: String,
    },
}

/// One range to write: image bytes `[offset, offset + len)`, and the
/// SHA-256 they must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
    pub sha256: String,
}

/// The extents of a block map.
pub fn extents(bmap: &image_build::bmap::Bmap) -> Vec<Extent> {
    bmap.ranges
        .iter()
        .map(|r| {
            let start = r.first.saturating_mul(bmap.block_size);
            let end = r
                .last
                .saturating_add(1)
                .saturating_mul(bmap.block_size)
                .min(bmap.image_size);
            Extent {
                offset: start,
                len: end.saturating_sub(start),
                sha256: r.sha256.clone(),
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Write,
    Verify,
}

/// What a progress callback is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    pub done: u64,
    pub total: u64,
}

/// How a target is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenMode {
    /// Bypass the page cache (O_DIRECT) if the target allows it.
    pub direct: bool,
    /// Claim a block device exclusively (O_EXCL): the kernel then refuses
    /// it while anything mounts or holds it, closing the gap between the
    /// checks and the write.
    pub exclusive: bool,
}

fn aligned(extents: &[Extent]) -> bool {
    extents
        .iter()
        .all(|e| e.offset % direct::ALIGN as u64 == 0 && e.len % direct::ALIGN as u64 == 0)
}

fn open_target(
    path: &Path,
    write: bool,
    mode: OpenMode,
    extents: &[Extent],
) -> Result<(File, bool), CopyError> {
    let what = if write { "writing" } else { "reading back" };
    let open = |direct: bool| {
        let mut flags = libc::O_CLOEXEC;
        if direct {
            flags |= libc::O_DIRECT;
        }
        if mode.exclusive {
            flags |= libc::O_EXCL;
        }
        let mut o = OpenOptions::new();
        if write {
            // Never truncate: a file target keeps the bytes between the
            // mapped ranges, like a card does.
            o.write(true).create(!mode.exclusive);
        } else {
            o.read(true);
        }
        o.custom_flags(flags).open(path)
    };
    let err = |source| CopyError::Open {
        what,
        path: path.to_path_buf(),
        source,
    };
    if mode.direct && aligned(extents) {
        match open(true) {
            Ok(f) => return Ok((f, true)),
            // tmpfs and some others refuse O_DIRECT: fall back to the page
            // cache, dropped before reading back.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(err(e)),
        }
    }
    open(false).map(|f| (f, false)).map_err(err)
}

/// Reads the ranges of `file` chunk by chunk on a helper thread, handing
/// each filled buffer to `consume` (offset, bytes) on this one.
fn pipelined(
    file: &File,
    extents: &[Extent],
    mut consume: impl FnMut(u64, &[u8]) -> Result<(), CopyError>,
    read_err: impl Fn(u64, io::Error) -> CopyError + Sync,
) -> Result<(), CopyError> {
    let (full_tx, full_rx) = mpsc::sync_channel::<(u64, usize, AlignedBuf)>(2);
    let (empty_tx, empty_rx) = mpsc::channel::<AlignedBuf>();
    for _ in 0..3 {
        let mut buf = AlignedBuf::new();
        buf.get(CHUNK); // allocated once, here
        let _ = empty_tx.send(buf);
    }
    let read_err = &read_err;
    std::thread::scope(|s| {
        let reader = s.spawn(move || -> Result<(), CopyError> {
            for e in extents {
                let mut at = e.offset;
                let end = e.offset + e.len;
                while at < end {
                    let Ok(mut buf) = empty_rx.recv() else {
                        return Ok(()); // the consumer stopped
                    };
                    let n = ((end - at) as usize).min(CHUNK);
                    read_exact_at(file, buf.get(n), at).map_err(|e| read_err(at, e))?;
                    if full_tx.send((at, n, buf)).is_err() {
                        return Ok(());
                    }
                    at += n as u64;
                }
            }
            Ok(())
        });
        let mut result = Ok(());
        for (at, n, mut buf) in full_rx.iter() {
            if let Err(e) = consume(at, buf.get(n)) {
                result = Err(e);
                break;
            }
            let _ = empty_tx.send(buf);
        }
        drop(empty_tx);
        drop(full_rx);
        let read = reader
            .join()
            .unwrap_or_else(|_| Err(read_err(0, io::Error::other("the reader thread panicked"))));
        result.and(read)
    })
}

fn read_exact_at(f: &File, buf: &mut [u8], at: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], at + done as u64) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How long each pass took, and how much it moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    pub bytes: u64,
    pub write: Duration,
    pub verify: Duration,
    pub direct: bool,
}

/// Writes `extents` of `image` to `target`, makes them durable, then reads
/// them back from the medium and checks each against its SHA-256. A
/// regular file shorter than `image_size` is extended to it (sparse), so
/// an image file target is as long as the image even when its last blocks
/// are unmapped.
pub fn write_and_verify(
    image: &Path,
    target: &Path,
    extents: &[Extent],
    image_size: u64,
    mode: OpenMode,
    progress: &mut dyn FnMut(Progress),
) -> Result<CopyStats, CopyError> {
    let total: u64 = extents.iter().map(|e| e.len).sum();
    let src = File::open(image).map_err(|source| CopyError::Open {
        what: "reading",
        path: image.to_path_buf(),
        source,
    })?;
    let started = Instant::now();
    let (dst, direct) = open_target(target, true, mode, extents)?;
    let mut done = 0u64;
    progress(Progress {
        phase: Phase::Write,
        done,
        total,
    });
    let write_err = |offset, source| CopyError::Write {
        path: target.to_path_buf(),
        offset,
        source,
    };
    pipelined(
        &src,
        extents,
        |at, bytes| {
            dst.write_all_at(bytes, at).map_err(|e| write_err(at, e))?;
            done += bytes.len() as u64;
            progress(Progress {
                phase: Phase::Write,
                done,
                total,
            });
            Ok(())
        },
        |offset, source| CopyError::ReadImage {
            path: image.to_path_buf(),
            offset,
            source,
        },
    )?;
    let end = extents.iter().map(|e| e.offset + e.len).max().unwrap_or(0);
    let meta = dst.metadata().map_err(|e| write_err(end, e))?;
    if meta.is_file() && meta.len() < image_size {
        dst.set_len(image_size)
            .map_err(|e| write_err(image_size, e))?;
    }
    dst.sync_all().map_err(|e| write_err(end, e))?;
    // Closed before reading back: an exclusive claim (O_EXCL) on a block
    // device refuses a second open, even our own.
    drop(dst);
    let write = started.elapsed();
    let verify = verify(target, extents, mode, direct, progress)?;
    Ok(CopyStats {
        bytes: total,
        write,
        verify,
        direct,
    })
}

/// Reads `extents` of `target` back from the medium and checks them.
pub fn verify(
    target: &Path,
    extents: &[Extent],
    mode: OpenMode,
    direct: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<Duration, CopyError> {
    let started = Instant::now();
    let total: u64 = extents.iter().map(|e| e.len).sum();
    let mode = OpenMode {
        direct: direct && mode.direct,
        exclusive: mode.exclusive,
    };
    let (f, direct) = open_target(target, false, mode, extents)?;
    let back_err = |offset, source| CopyError::ReadBack {
        path: target.to_path_buf(),
        offset,
        source,
    };
    if !direct {
        for e in extents {
            crate::sys::drop_cache(&f, e.offset, e.len).map_err(|err| back_err(e.offset, err))?;
        }
    }
    let mut done = 0u64;
    let mut i = 0usize;
    let mut hash = Sha256::new();
    let mut hashed = 0u64;
    pipelined(
        &f,
        extents,
        |_, bytes| {
            hash.update(bytes);
            hashed += bytes.len() as u64;
            done += bytes.len() as u64;
            // Chunks never span two extents: finish each as it fills.
            while let Some(e) = extents.get(i).filter(|e| hashed == e.len) {
                let actual = hex::encode(std::mem::take(&mut hash).finalize());
                if actual != e.sha256 {
                    return Err(CopyError::Mismatch {
                        path: target.to_path_buf(),
                        start: e.offset,
                        end: e.offset + e.len,
                        expected: e.sha256.clone(),
                        actual,
                    });
                }
                hashed = 0;
                i += 1;
            }
            progress(Progress {
                phase: Phase::Verify,
                done,
                total,
            });
            Ok(())
        },
        back_err,
    )?;
    Ok(started.elapsed())
}
