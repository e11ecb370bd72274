//! Streaming verification: the signature is checked before any payload
//! byte is read, and every chunk is checked against the signed hash list
//! before it is handed out. Memory use is one chunk, whatever the bundle size.

use std::io::Read;

use ed25519_dalek::VerifyingKey;
use flate2::{Decompress, FlushDecompress, Status};
use sha2::{Digest, Sha256};

use crate::header::Header;
use crate::{BundleError, Chunk, Compression, Manifest, PayloadInfo};

pub struct BundleReader<R: Read> {
    r: R,
    manifest: Manifest,
    next: usize,
    signer: VerifyingKey,
    header_len: u64,
}

impl<R: Read> BundleReader<R> {
    /// Reads the header, manifest and signatures; succeeds only if at least
    /// one signature is by a trusted key and verifies strictly.
    pub fn open(mut r: R, trusted: &[VerifyingKey]) -> Result<Self, BundleError> {
        let header = Header::read(&mut r)?;
        let signer = header.verify(trusted)?;
        // Parsed only once signed: an attacker's manifest never reaches the parser.
        let manifest = Manifest::parse(header.manifest_text()?)?;
        Ok(BundleReader {
            r,
            manifest,
            next: 0,
            signer,
            header_len: header.len(),
        })
    }

    /// The bundle's whole length: header and every payload's stored bytes
    /// (the manifest's parser has checked that the sum fits).
    pub fn len(&self) -> u64 {
        self.header_len + self.manifest.stored_total()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The trusted key that signed this bundle.
    pub fn signer(&self) -> &VerifyingKey {
        &self.signer
    }

    pub fn check_board(&self, board: &str) -> Result<(), BundleError> {
        if self.manifest.board != board {
            return Err(BundleError::WrongBoard {
                expected: board.to_string(),
                found: self.manifest.board.clone(),
            });
        }
        Ok(())
    }

    /// The next payload, in bundle order; None after the last one.
    pub fn next_payload(&mut self) -> Result<Option<PayloadReader<'_, R>>, BundleError> {
        let Some(info) = self.manifest.payloads.get(self.next).cloned() else {
            return Ok(None);
        };
        self.next += 1;
        Ok(Some(PayloadReader {
            info,
            chunk_size: self.manifest.chunk_size,
            r: &mut self.r,
            index: 0,
            stored: Vec::new(),
        }))
    }

    /// Checks nothing follows the last payload (call after all payloads).
    /// Reads at most one byte more: a stream that never ends is refused at
    /// its first extra byte, not read for ever.
    pub fn finish(mut self) -> Result<(), BundleError> {
        if self.next_payload()?.is_some() {
            return Err(BundleError::SizeMismatch {
                payload: "(unread)".into(),
                detail: "was not read".into(),
            });
        }
        let mut probe = [0u8; 1];
        loop {
            match self.r.read(&mut probe) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(BundleError::Trailing),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BundleError::Io(e)),
            }
        }
    }
}

pub struct PayloadReader<'a, R: Read> {
    info: PayloadInfo,
    chunk_size: u64,
    r: &'a mut R,
    index: usize,
    stored: Vec<u8>,
}

/// One chunk's stored bytes as read from the bundle, not yet trusted: they
/// become usable only through [`StoredChunk::check`] or
/// [`StoredChunk::expand`], which verify them against the signed hash first.
/// Both may run on another thread than the reader.
#[derive(Debug, Clone)]
pub struct StoredChunk {
    pub payload: String,
    pub index: usize,
    /// Byte offset of the plain chunk inside the payload.
    pub offset: u64,
    /// The chunk's plain length, from the signed manifest.
    pub len: usize,
    compression: Compression,
    info: Chunk,
}

impl StoredChunk {
    /// Checks the stored bytes against the signed hash.
    pub fn check(&self, stored: &[u8]) -> Result<(), BundleError> {
        if <[u8; 32]>::from(Sha256::digest(stored)) != self.info.stored_sha256 {
            return Err(BundleError::ChunkHash {
                payload: self.payload.clone(),
                index: self.index as u64,
            });
        }
        Ok(())
    }

    /// Checks `stored` against the signed hash, only then decompresses it
    /// into `out` (resized to the chunk's length) and checks size, and with
    /// `check_plain` the plain hash, against the signed manifest.
    /// `check_plain` may be false only when an earlier pass decompressed the
    /// very same stored bytes and checked the result: decompression is
    /// deterministic, so the stored hash then vouches for the output.
    pub fn expand(
        &self,
        stored: &[u8],
        out: &mut Vec<u8>,
        check_plain: bool,
    ) -> Result<(), BundleError> {
        // Only grow: a reused buffer is overwritten, not zeroed again.
        if out.len() < self.len {
            out.resize(self.len, 0);
        }
        out.truncate(self.len);
        self.expand_into(stored, out, check_plain)
    }

    /// [`StoredChunk::expand`] into a caller's buffer of exactly the chunk's
    /// plain length (an aligned one, for direct I/O).
    pub fn expand_into(
        &self,
        stored: &[u8],
        out: &mut [u8],
        check_plain: bool,
    ) -> Result<(), BundleError> {
        self.check(stored)?;
        let mismatch = |detail: &str| BundleError::SizeMismatch {
            payload: self.payload.clone(),
            detail: detail.to_string(),
        };
        if out.len() != self.len {
            return Err(mismatch("was given a buffer of the wrong size"));
        }
        match self.compression {
            Compression::None => {
                if stored.len() != self.len {
                    return Err(mismatch(
                        "has a chunk whose length differs from its signed size",
                    ));
                }
                out.copy_from_slice(stored);
            }
            Compression::Deflate => {
                // One call over the whole chunk: the output has exactly the
                // signed length, so a stream that would produce more stops
                // short of its end and is refused.
                let mut z = Decompress::new(false);
                let status = z
                    .decompress(stored, out, FlushDecompress::Finish)
                    .map_err(|_| mismatch("has a chunk that does not decompress"))?;
                if status != Status::StreamEnd || z.total_out() != self.len as u64 {
                    return Err(mismatch("has a chunk that decompresses to the wrong size"));
                }
            }
        }
        if check_plain && <[u8; 32]>::from(Sha256::digest(&out[..])) != self.info.sha256 {
            return Err(BundleError::ChunkHash {
                payload: self.payload.clone(),
                index: self.index as u64,
            });
        }
        Ok(())
    }
}

impl<R: Read> PayloadReader<'_, R> {
    pub fn info(&self) -> &PayloadInfo {
        &self.info
    }

    /// Reads the next chunk's stored bytes into `stored`; None after the
    /// last chunk. They are checked by [`StoredChunk::check`] or
    /// [`StoredChunk::expand`] before any use.
    pub fn next_stored(
        &mut self,
        stored: &mut Vec<u8>,
    ) -> Result<Option<StoredChunk>, BundleError> {
        let Some(chunk) = self.info.chunks.get(self.index).copied() else {
            return Ok(None);
        };
        let name = &self.info.name;
        let index = self.index;
        // read_to_end fills spare capacity without zeroing it first; the
        // reserve (bounded: the manifest check caps a chunk's stored size)
        // spares it growing the buffer by copies.
        stored.clear();
        stored.reserve_exact(chunk.stored as usize);
        (&mut *self.r)
            .take(chunk.stored)
            .read_to_end(stored)
            .map_err(BundleError::Io)?;
        if stored.len() as u64 != chunk.stored {
            return Err(BundleError::Truncated(format!(
                "payload '{name}' ends early"
            )));
        }
        let offset = index as u64 * self.chunk_size;
        let last = index + 1 == self.info.chunks.len();
        let len = if last {
            self.info.size - offset
        } else {
            self.chunk_size
        };
        self.index += 1;
        Ok(Some(StoredChunk {
            payload: name.clone(),
            index,
            offset,
            len: len as usize,
            compression: self.info.compression,
            info: chunk,
        }))
    }

    /// Fills `buf` with the next chunk and returns its length, or None after
    /// the last one. The chunk's stored bytes are checked against the signed
    /// hash before they are decompressed, and the result against its own
    /// signed hash and size, so nothing unverified ever leaves this function.
    pub fn next_chunk(&mut self, buf: &mut Vec<u8>) -> Result<Option<usize>, BundleError> {
        let mut stored = std::mem::take(&mut self.stored);
        let result = match self.next_stored(&mut stored) {
            Ok(Some(chunk)) => chunk.expand(&stored, buf, true).map(|()| Some(chunk.len)),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        self.stored = stored;
        result
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(data).unwrap();
        z.finish().unwrap()
    }

    /// A chunk as a signed manifest would describe it: hashes that match
    /// `stored` and `plain`, and a claimed plain length `len`.
    fn chunk(stored: &[u8], plain: &[u8], len: usize) -> StoredChunk {
        StoredChunk {
            payload: "rootfs".into(),
            index: 0,
            offset: 0,
            len,
            compression: Compression::Deflate,
            info: Chunk {
                stored: stored.len() as u64,
                stored_sha256: Sha256::digest(stored).into(),
                sha256: Sha256::digest(plain).into(),
            },
        }
    }

    fn expand(c: &StoredChunk, stored: &[u8]) -> Result<Vec<u8>, BundleError> {
        let mut out = vec![0u8; c.len];
        c.expand_into(stored, &mut out, true).map(|()| out)
    }

    #[test]
    fn a_chunk_inflates_to_exactly_its_signed_length() {
        let plain: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let stored = deflate(&plain);
        assert_eq!(
            expand(&chunk(&stored, &plain, plain.len()), &stored).unwrap(),
            plain
        );
        // Signed hashes, lying length: one byte more or less is refused.
        for len in [plain.len() - 1, plain.len() + 1] {
            let err = expand(&chunk(&stored, &plain, len), &stored).unwrap_err();
            assert!(
                matches!(err, BundleError::SizeMismatch { .. }),
                "{len}: {err}"
            );
        }
    }

    #[test]
    fn a_signed_bomb_stops_at_the_signed_length() {
        // 256 MiB of zeroes in a quarter of a MiB, claiming 1 MiB: refused
        // after 1 MiB of output, in the buffer the caller gave.
        let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        let zeroes = vec![0u8; 1 << 20];
        for _ in 0..256 {
            z.write_all(&zeroes).unwrap();
        }
        let stored = z.finish().unwrap();
        let c = chunk(&stored, &zeroes, zeroes.len());
        let err = expand(&c, &stored).unwrap_err();
        assert!(matches!(err, BundleError::SizeMismatch { .. }), "{err}");
    }

    #[test]
    fn a_cut_stream_is_refused_even_when_signed() {
        let plain = vec![5u8; 10_000];
        let stored = deflate(&plain);
        let cut = &stored[..stored.len() - 2];
        let err = expand(&chunk(cut, &plain, plain.len()), cut).unwrap_err();
        assert!(matches!(err, BundleError::SizeMismatch { .. }), "{err}");
        // Garbage that is not deflate at all.
        let junk = vec![0xffu8; 64];
        let err = expand(&chunk(&junk, &plain, plain.len()), &junk).unwrap_err();
        assert!(matches!(err, BundleError::SizeMismatch { .. }), "{err}");
    }

    #[test]
    fn unsigned_stored_bytes_are_never_inflated() {
        let plain = vec![1u8; 4096];
        let stored = deflate(&plain);
        let c = chunk(&stored, &plain, plain.len());
        let mut tampered = stored.clone();
        tampered[0] ^= 1;
        let err = expand(&c, &tampered).unwrap_err();
        assert!(matches!(err, BundleError::ChunkHash { .. }), "{err}");
    }

    #[test]
    fn a_wrong_sized_buffer_is_refused() {
        let plain = vec![1u8; 4096];
        let stored = deflate(&plain);
        let c = chunk(&stored, &plain, plain.len());
        let mut out = vec![0u8; 4095];
        assert!(c.expand_into(&stored, &mut out, true).is_err());
    }
}
