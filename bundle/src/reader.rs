//! Streaming verification: the signature is checked before any payload
//! byte is read, and every chunk is checked against the signed hash list
//! before it is handed out. Memory use is one chunk, whatever the bundle size.

use std::io::Read;

use ed25519_dalek::VerifyingKey;
use flate2::read::DeflateDecoder;
use sha2::{Digest, Sha256};

use crate::header::Header;
use crate::writer::read_full;
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
    /// `check_plain` the plain hash, against the signed manifest. `check_plain` may be false only when an earlier
    /// pass decompressed the very same stored bytes and checked the result:
    /// decompression is deterministic, so the stored hash then vouches for
    /// the output.
    pub fn expand(
        &self,
        stored: &[u8],
        out: &mut Vec<u8>,
        check_plain: bool,
    ) -> Result<(), BundleError> {
        self.check(stored)?;
        let mismatch = |detail: &str| BundleError::SizeMismatch {
            payload: self.payload.clone(),
            detail: detail.to_string(),
        };
        match self.compression {
            Compression::None => {
                if stored.len() != self.len {
                    return Err(mismatch(
                        "has a chunk whose length differs from its signed size",
                    ));
                }
                out.clear();
                out.extend_from_slice(stored);
            }
            Compression::Deflate => {
                // Only grow: a reused buffer is overwritten, not zeroed again.
                if out.len() < self.len {
                    out.resize(self.len, 0);
                }
                out.truncate(self.len);
                let mut dec = DeflateDecoder::new(stored);
                let got = read_full(&mut dec, out)
                    .map_err(|_| mismatch("has a chunk that does not decompress"))?;
                let mut probe = [0u8; 1];
                let more = dec
                    .read(&mut probe)
                    .map_err(|_| mismatch("has a chunk that does not decompress"))?;
                if got != self.len || more != 0 {
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
        // read_to_end fills spare capacity without zeroing it first.
        stored.clear();
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
