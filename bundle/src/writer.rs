//! Builds a bundle: hashes each payload in fixed-size chunks while
//! compressing it, then writes the signed manifest and the payloads.

use std::io::{Read, Write};

use ed25519_dalek::{Signer, SigningKey};
use flate2::write::DeflateEncoder;
use sha2::{Digest, Sha256};

use crate::{
    BundleError, Chunk, Compression, Manifest, PayloadInfo, FORMAT_VERSION, MAGIC, MAX_SIGNATURES,
};

pub struct PayloadSource<'a> {
    pub name: &'a str,
    pub data: &'a mut dyn Read,
    pub compression: Compression,
}

/// Writes a bundle with `header`'s board, versions and chunk size (its
/// `payloads` are ignored and filled in from `sources`). Returns the
/// manifest as signed.
pub fn write_bundle<W: Write>(
    mut out: W,
    header: &Manifest,
    sources: &mut [PayloadSource],
    keys: &[&SigningKey],
) -> Result<Manifest, BundleError> {
    if keys.is_empty() || keys.len() > MAX_SIGNATURES as usize {
        return Err(BundleError::Key(format!(
            "a bundle needs 1 to {MAX_SIGNATURES} signing keys"
        )));
    }
    let chunk = header.chunk_size as usize;
    let mut manifest = Manifest {
        payloads: Vec::new(),
        ..header.clone()
    };
    // Stored payloads are kept in memory on the host: they are compressed,
    // and the signed manifest has to be written before them.
    let mut stored = Vec::new();
    let mut buf = vec![0u8; chunk];
    for src in sources.iter_mut() {
        let mut info = PayloadInfo {
            name: src.name.to_string(),
            size: 0,
            stored: 0,
            compression: src.compression,
            chunks: Vec::new(),
        };
        let mut bytes = Vec::new();
        loop {
            let n = read_full(src.data, &mut buf)?;
            if n == 0 {
                break;
            }
            let plain = &buf[..n];
            let packed = match src.compression {
                Compression::Deflate => {
                    let mut e = DeflateEncoder::new(Vec::new(), flate2::Compression::default());
                    e.write_all(plain)?;
                    e.finish()?
                }
                Compression::None => plain.to_vec(),
            };
            info.chunks.push(Chunk {
                stored: packed.len() as u64,
                stored_sha256: Sha256::digest(&packed).into(),
                sha256: Sha256::digest(plain).into(),
            });
            info.size += n as u64;
            info.stored += packed.len() as u64;
            bytes.extend_from_slice(&packed);
            if n < chunk {
                break;
            }
        }
        manifest.payloads.push(info);
        stored.push(bytes);
    }
    let text = manifest.to_text()?;
    // Round-trip through the parser so a bundle we write is one we accept.
    Manifest::parse(&text)?;
    let mut signed = Vec::with_capacity(16 + text.len());
    signed.extend_from_slice(MAGIC);
    signed.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    signed.extend_from_slice(&(text.len() as u32).to_le_bytes());
    signed.extend_from_slice(text.as_bytes());
    out.write_all(&signed)?;
    out.write_all(&[keys.len() as u8])?;
    for k in keys {
        out.write_all(k.verifying_key().as_bytes())?;
        out.write_all(&k.sign(&signed).to_bytes())?;
    }
    for bytes in &stored {
        out.write_all(bytes)?;
    }
    out.flush()?;
    Ok(manifest)
}

/// Reads until `buf` is full or the input ends.
pub(crate) fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
