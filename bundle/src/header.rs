//! The bundle's header: magic, format, the manifest's bytes and the
//! signature list, read and bounded before anything is trusted. Every
//! reader of a bundle (the applier, `xtask inspect`, the agent sizing a
//! bundle on a block device) goes through here.

use std::io::Read;

use ed25519_dalek::{Signature, VerifyingKey};

use crate::{BundleError, FORMAT_VERSION, MAGIC, MAX_MANIFEST, MAX_SIGNATURES};

/// Magic, format and manifest length.
const FIXED: usize = 16;
/// One signature entry: the ed25519 public key and its signature.
const ENTRY: usize = 96;

/// One entry of the signature list, not yet checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureEntry {
    pub key: [u8; 32],
    pub signature: [u8; 64],
}

/// Everything before the first payload, as read.
#[derive(Debug, Clone)]
pub struct Header {
    pub format: u32,
    /// The signed bytes: magic, format, length and the manifest.
    signed: Vec<u8>,
    pub signatures: Vec<SignatureEntry>,
}

fn exact<R: Read>(r: &mut R, buf: &mut [u8], what: &str) -> Result<(), BundleError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            BundleError::Truncated(format!("it ends inside the {what}"))
        }
        _ => BundleError::Io(e),
    })
}

impl Header {
    /// Reads the header; the manifest's length and the number of
    /// signatures are bounded before anything is allocated.
    pub fn read<R: Read>(r: &mut R) -> Result<Header, BundleError> {
        let mut head = [0u8; FIXED];
        exact(r, &mut head, "header")?;
        if &head[..8] != MAGIC {
            return Err(BundleError::Magic);
        }
        let format = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        if format != FORMAT_VERSION {
            return Err(BundleError::Format(format, FORMAT_VERSION));
        }
        let len = u32::from_le_bytes([head[12], head[13], head[14], head[15]]);
        if len > MAX_MANIFEST {
            return Err(BundleError::Manifest(format!(
                "manifest length {len} exceeds the {MAX_MANIFEST}-byte limit"
            )));
        }
        let mut signed = head.to_vec();
        signed.resize(FIXED + len as usize, 0);
        exact(r, &mut signed[FIXED..], "manifest")?;
        let mut count = [0u8; 1];
        exact(r, &mut count, "signature list")?;
        if count[0] == 0 || count[0] > MAX_SIGNATURES {
            return Err(BundleError::Manifest(format!(
                "{} signatures (1 to {MAX_SIGNATURES} allowed)",
                count[0]
            )));
        }
        let mut signatures = Vec::with_capacity(count[0] as usize);
        for _ in 0..count[0] {
            let mut entry = [0u8; ENTRY];
            exact(r, &mut entry, "signature list")?;
            let mut key = [0u8; 32];
            let mut signature = [0u8; 64];
            key.copy_from_slice(&entry[..32]);
            signature.copy_from_slice(&entry[32..]);
            signatures.push(SignatureEntry { key, signature });
        }
        Ok(Header {
            format,
            signed,
            signatures,
        })
    }

    /// The header's length in bytes: where the first payload starts.
    pub fn len(&self) -> u64 {
        (self.signed.len() + 1 + ENTRY * self.signatures.len()) as u64
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The manifest's text, unverified.
    pub fn manifest_text(&self) -> Result<&str, BundleError> {
        std::str::from_utf8(&self.signed[FIXED..])
            .map_err(|_| BundleError::Manifest("not UTF-8".into()))
    }

    /// The first trusted key whose signature over the header verifies
    /// strictly.
    pub fn verify(&self, trusted: &[VerifyingKey]) -> Result<VerifyingKey, BundleError> {
        for entry in &self.signatures {
            let Ok(key) = VerifyingKey::from_bytes(&entry.key) else {
                continue;
            };
            let sig = Signature::from_bytes(&entry.signature);
            if trusted.contains(&key) && key.verify_strict(&self.signed, &sig).is_ok() {
                return Ok(key);
            }
        }
        Err(BundleError::Untrusted)
    }
}
