//! Streaming verification: the signature is checked before any payload
//! byte is read, and every chunk is checked against the signed hash list
//! before it is handed out. Memory use is one chunk, whatever the bundle size.

use std::io::Read;

use ed25519_dalek::{Signature, VerifyingKey};
use flate2::read::DeflateDecoder;
use sha2::{Digest, Sha256};

use crate::writer::read_full;
use crate::{
    BundleError, Compression, Manifest, PayloadInfo, FORMAT_VERSION, MAGIC, MAX_MANIFEST,
    MAX_SIGNATURES,
};

pub struct BundleReader<R: Read> {
    r: R,
    manifest: Manifest,
    next: usize,
    signer: VerifyingKey,
}

fn exact<R: Read>(r: &mut R, buf: &mut [u8], what: &str) -> Result<(), BundleError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            BundleError::Truncated(format!("it ends inside the {what}"))
        }
        _ => BundleError::Io(e),
    })
}

impl<R: Read> BundleReader<R> {
    /// Reads the header, manifest and signatures; succeeds only if at least
    /// one signature is by a trusted key and verifies strictly.
    pub fn open(mut r: R, trusted: &[VerifyingKey]) -> Result<Self, BundleError> {
        let mut head = [0u8; 16];
        exact(&mut r, &mut head, "header")?;
        if &head[..8] != MAGIC {
            return Err(BundleError::Magic);
        }
        let format = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if format != FORMAT_VERSION {
            return Err(BundleError::Format(format, FORMAT_VERSION));
        }
        let len = u32::from_le_bytes(head[12..16].try_into().expect("4 bytes"));
        if len > MAX_MANIFEST {
            return Err(BundleError::Manifest(format!(
                "manifest length {len} exceeds the {MAX_MANIFEST}-byte limit"
            )));
        }
        let mut signed = head.to_vec();
        signed.resize(16 + len as usize, 0);
        exact(&mut r, &mut signed[16..], "manifest")?;
        let mut count = [0u8; 1];
        exact(&mut r, &mut count, "signature list")?;
        if count[0] == 0 || count[0] > MAX_SIGNATURES {
            return Err(BundleError::Manifest(format!(
                "{} signatures (1 to {MAX_SIGNATURES} allowed)",
                count[0]
            )));
        }
        let mut signer = None;
        for _ in 0..count[0] {
            let mut entry = [0u8; 96];
            exact(&mut r, &mut entry, "signature list")?;
            let Ok(key) = VerifyingKey::from_bytes(entry[..32].try_into().expect("32 bytes"))
            else {
                continue;
            };
            let sig = Signature::from_bytes(entry[32..].try_into().expect("64 bytes"));
            if signer.is_none()
                && trusted.contains(&key)
                && key.verify_strict(&signed, &sig).is_ok()
            {
                signer = Some(key);
            }
        }
        let signer = signer.ok_or(BundleError::Untrusted)?;
        // Parsed only once signed: an attacker's manifest never reaches the parser.
        let text = std::str::from_utf8(&signed[16..])
            .map_err(|_| BundleError::Manifest("not UTF-8".into()))?;
        let manifest = Manifest::parse(text)?;
        Ok(BundleReader {
            r,
            manifest,
            next: 0,
            signer,
        })
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
    pub fn finish(mut self) -> Result<(), BundleError> {
        if self.next_payload()?.is_some() {
            return Err(BundleError::SizeMismatch {
                payload: "(unread)".into(),
                detail: "was not read".into(),
            });
        }
        let mut extra = 0u64;
        let mut buf = [0u8; 4096];
        loop {
            let n = self.r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            extra += n as u64;
        }
        if extra > 0 {
            return Err(BundleError::Trailing(extra));
        }
        Ok(())
    }
}

pub struct PayloadReader<'a, R: Read> {
    info: PayloadInfo,
    chunk_size: u64,
    r: &'a mut R,
    index: usize,
    stored: Vec<u8>,
}

impl<R: Read> PayloadReader<'_, R> {
    pub fn info(&self) -> &PayloadInfo {
        &self.info
    }

    /// Fills `buf` with the next chunk and returns its length, or None after
    /// the last one. The chunk's stored bytes are checked against the signed
    /// hash before they are decompressed, and the result against its own
    /// signed hash and size, so nothing unverified ever leaves this function.
    pub fn next_chunk(&mut self, buf: &mut Vec<u8>) -> Result<Option<usize>, BundleError> {
        let Some(chunk) = self.info.chunks.get(self.index).copied() else {
            return Ok(None);
        };
        let name = &self.info.name;
        let index = self.index as u64;
        self.stored.resize(chunk.stored as usize, 0);
        self.r
            .read_exact(&mut self.stored)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    BundleError::Truncated(format!("payload '{name}' ends early"))
                }
                _ => BundleError::Io(e),
            })?;
        if <[u8; 32]>::from(Sha256::digest(&self.stored)) != chunk.stored_sha256 {
            return Err(BundleError::ChunkHash {
                payload: name.clone(),
                index,
            });
        }
        let last = self.index + 1 == self.info.chunks.len();
        let want = if last {
            self.info.size - index * self.chunk_size
        } else {
            self.chunk_size
        };
        let mismatch = |detail: &str| BundleError::SizeMismatch {
            payload: name.clone(),
            detail: detail.to_string(),
        };
        match self.info.compression {
            Compression::None => {
                if chunk.stored != want {
                    return Err(mismatch(
                        "has a chunk whose length differs from its signed size",
                    ));
                }
                buf.clear();
                buf.extend_from_slice(&self.stored);
            }
            Compression::Deflate => {
                buf.resize(want as usize, 0);
                let mut dec = DeflateDecoder::new(&self.stored[..]);
                let got = read_full(&mut dec, buf)
                    .map_err(|_| mismatch("has a chunk that does not decompress"))?;
                let mut probe = [0u8; 1];
                let more = dec
                    .read(&mut probe)
                    .map_err(|_| mismatch("has a chunk that does not decompress"))?;
                if got as u64 != want || more != 0 {
                    return Err(mismatch("has a chunk that decompresses to the wrong size"));
                }
            }
        }
        if <[u8; 32]>::from(Sha256::digest(&buf[..])) != chunk.sha256 {
            return Err(BundleError::ChunkHash {
                payload: name.clone(),
                index,
            });
        }
        self.index += 1;
        Ok(Some(want as usize))
    }
}
