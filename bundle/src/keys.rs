//! Ed25519 key files: the private key as 64 hex characters (mode 0600), the
//! public key as 64 hex characters; both with a trailing newline.

use std::io::Read;
use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::BundleError;

pub fn generate() -> Result<SigningKey, BundleError> {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    Ok(SigningKey::from_bytes(&seed))
}

fn parse_hex32(text: &str, what: &str) -> Result<[u8; 32], BundleError> {
    let bytes = hex::decode(text.trim())
        .map_err(|e| BundleError::Key(format!("{what} is not hex: {e}")))?;
    bytes
        .try_into()
        .map_err(|_| BundleError::Key(format!("{what} must be 32 bytes (64 hex characters)")))
}

pub fn signing_key_from_text(text: &str) -> Result<SigningKey, BundleError> {
    Ok(SigningKey::from_bytes(&parse_hex32(text, "private key")?))
}

pub fn verifying_key_from_text(text: &str) -> Result<VerifyingKey, BundleError> {
    VerifyingKey::from_bytes(&parse_hex32(text, "public key")?)
        .map_err(|e| BundleError::Key(format!("public key is not a valid ed25519 point: {e}")))
}

pub fn signing_key_text(key: &SigningKey) -> String {
    format!("{}\n", hex::encode(key.to_bytes()))
}

pub fn verifying_key_text(key: &VerifyingKey) -> String {
    format!("{}\n", hex::encode(key.to_bytes()))
}

pub fn load_signing_key(path: &Path) -> Result<SigningKey, BundleError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        BundleError::Key(format!("cannot read private key {}: {e}", path.display()))
    })?;
    signing_key_from_text(&text).map_err(|e| BundleError::Key(format!("{}: {e}", path.display())))
}

pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, BundleError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| BundleError::Key(format!("cannot read public key {}: {e}", path.display())))?;
    verifying_key_from_text(&text).map_err(|e| BundleError::Key(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_round_trips() {
        let k = generate().unwrap();
        let back = signing_key_from_text(&signing_key_text(&k)).unwrap();
        assert_eq!(back.to_bytes(), k.to_bytes());
        let p = verifying_key_from_text(&verifying_key_text(&k.verifying_key())).unwrap();
        assert_eq!(p, k.verifying_key());
        assert!(verifying_key_from_text("zz").is_err());
        assert!(signing_key_from_text("abcd").is_err());
    }
}
